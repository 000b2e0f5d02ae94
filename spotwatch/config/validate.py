"""Check one layer of raw YAML settings and normalise it, collecting every problem.

Each layer (a file, a conf.d file, the user-data section) is checked on its own, so a
problem can name the layer it came from. That works because nothing spans layers: hooks
are a list, and a later list replaces an earlier one whole.

Normalised values are what the dataclasses in `schema` hold: durations as float seconds,
lists as tuples, hooks as `HookSpec`. Layers are then merged by `load`, and the merge
is turned into a `Config` by `build_config`.
"""

from __future__ import annotations

import re
from dataclasses import fields
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from spotwatch.config.errors import describe, describe_secret, key_path_of, unknown_key
from spotwatch.config.schema import (
    HOOK_ACTIONS,
    AutoscalingSettings,
    Config,
    EcsSettings,
    EventsSettings,
    HibernateSettings,
    HookSpec,
    ImdsSettings,
    InstanceSettings,
    LoadBalancerSettings,
    LogSettings,
    MetricsSettings,
    RebalanceSettings,
    ScheduledEventsSettings,
    WebhookSettings,
)
from spotwatch.config.template import message_template
from spotwatch.config.values import (
    Leaf,
    absolute_path,
    autoscaling_budget,
    boolean,
    classic_load_balancer_name,
    command,
    event_bus,
    http_endpoint,
    http_url,
    integer,
    lifecycle_hook_name,
    listen_address,
    non_negative_duration,
    non_negative_integer,
    one_of,
    optional,
    positive_duration,
    run_as_user,
    scalar_text,
    secret_http_url,
    sns_topic_arn,
    stop_reason,
    target_group_arn,
    text,
    token_ttl,
)

Problems = List[str]


class _Invalid:
    """Marks a value that failed its check (its problem is already recorded)."""


INVALID: Any = _Invalid()

# A check gets the raw value and its key path, records problems, and returns the
# normalised value or INVALID.
Check = Callable[[Any, str, Problems], Any]


def leaf(convert: Leaf) -> Check:
    def check(value: Any, path: str, problems: Problems) -> Any:
        try:
            return convert(value)
        except ValueError as error:
            problems.append(f"{path}: {error}")
            return INVALID

    return check


# --- compound checks (record problems themselves) -----------------------------------


def _is_mapping(value: Any, path: str, problems: Problems, *, secret: bool = False) -> bool:
    if isinstance(value, dict):
        return True
    shown = describe_secret(value) if secret else describe(value)
    problems.append(f"{path}: expected a mapping, got {shown}")
    return False


def section(spec: Mapping[str, Check], *, secret: bool = False) -> Check:
    """A mapping with known keys; returns only the keys given (later layers merge into it).
    `secret`: it may hold secrets, so its problems never show a given value or odd key."""

    def check(value: Any, path: str, problems: Problems) -> Any:
        if value is None:  # `imds:` with every line commented out
            return {}
        if not _is_mapping(value, path, problems, secret=secret):
            return INVALID
        result: Dict[str, Any] = {}
        for key, raw in value.items():
            key_path = key_path_of(path, key, secret=secret)
            if key not in spec:
                problems.append(unknown_key(key_path, key, spec))
                continue
            checked = spec[key](raw, key_path, problems)
            if checked is not INVALID:
                result[key] = checked
        return result

    return check


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def _string_map(
    name_pattern: Any,
    name_rule: str,
    reserved_prefix: Optional[str] = None,
    *,
    secret: bool = False,
) -> Check:
    """`secret`: the values may be secrets; no problem shows one, whole or in part."""

    def check(value: Any, path: str, problems: Problems) -> Any:
        if value is None:
            return {}
        if not _is_mapping(value, path, problems, secret=secret):
            return INVALID
        result: Dict[str, str] = {}
        for key, raw in value.items():
            key_path = key_path_of(path, key, secret=secret)
            if not isinstance(key, str) or not name_pattern.fullmatch(key):
                problems.append(f"{key_path}: not a valid {name_rule}")
                continue
            if reserved_prefix and key.startswith(reserved_prefix):
                problems.append(f"{key_path}: {reserved_prefix}* names are set by spotwatch")
                continue
            try:
                converted = scalar_text(raw)
            except ValueError as error:
                shown = f"expected a string, got {describe_secret(raw)}" if secret else error
                problems.append(f"{key_path}: {shown}")
                continue
            if "\n" in converted or "\r" in converted or "\0" in converted:
                problems.append(f"{key_path}: must not contain line breaks or NUL")
                continue
            result[key] = converted
        return result

    return check


hook_env = _string_map(_ENV_NAME, "environment variable name", reserved_prefix="SPOTWATCH_")
http_headers = _string_map(_HEADER_NAME, "HTTP header name", secret=True)


def unique_list(convert: Leaf, what: str, *, non_empty: bool = False) -> Check:
    """A list of distinct values, each checked by `convert`; problems name the index."""

    def check(value: Any, path: str, problems: Problems) -> Any:
        if value is None and not non_empty:
            return ()
        if not isinstance(value, list) or (non_empty and not value):
            kind = "a non-empty list" if non_empty else "a list"
            problems.append(f"{path}: expected {kind} of {what}, got {describe(value)}")
            return INVALID
        items: List[Any] = []
        ok = True
        for index, raw in enumerate(value):
            item = leaf(convert)(raw, f"{path}[{index}]", problems)
            if item is INVALID:
                ok = False
            elif item in items:
                problems.append(f"{path}[{index}]: {describe(item)} is listed twice")
                ok = False
            else:
                items.append(item)
        return tuple(items) if ok else INVALID

    return check


hook_actions = unique_list(one_of(*HOOK_ACTIONS), ", ".join(HOOK_ACTIONS), non_empty=True)


_HOOK_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def hook_name(value: Any) -> str:
    if not isinstance(value, str) or not _HOOK_NAME.fullmatch(value):
        raise ValueError(f"expected letters, digits, _ . - only, got {describe(value)}")
    return value


_HOOK_FIELDS: Dict[str, Check] = {
    "name": leaf(hook_name),
    "command": leaf(command),
    "actions": hook_actions,
    "timeout": leaf(positive_duration),
    "order": leaf(integer),
    "user": leaf(run_as_user),
    "env": hook_env,
}
_REQUIRED_HOOK_FIELDS = ("name", "command")


def hooks(value: Any, path: str, problems: Problems) -> Any:
    if value is None:
        return ()
    if not isinstance(value, list):
        problems.append(f"{path}: expected a list of hooks, got {describe(value)}")
        return INVALID
    specs: List[HookSpec] = []
    first_seen: Dict[str, str] = {}
    before = len(problems)
    for index, raw in enumerate(value):
        hook_path = f"{path}[{index}]"
        if not _is_mapping(raw, hook_path, problems):
            continue
        checked = section(_HOOK_FIELDS)(raw, hook_path, problems)
        for required in _REQUIRED_HOOK_FIELDS:
            if required not in raw:
                problems.append(f"{hook_path}.{required}: required")
        name = checked.get("name")
        if name is not None:
            if name in first_seen:
                problems.append(
                    f"{hook_path}.name: duplicate name {describe(name)} (also {first_seen[name]})"
                )
            first_seen.setdefault(name, hook_path)
        if all(required in checked for required in _REQUIRED_HOOK_FIELDS):
            specs.append(HookSpec(**checked))
    return tuple(specs) if len(problems) == before else INVALID


# --- the whole layout (README, Configuration) ----------------------------------------

SECTIONS: Dict[str, Check] = {
    "poll_interval": leaf(positive_duration),
    "deadline_margin": leaf(non_negative_duration),
    "dry_run": leaf(boolean),
    "state_dir": leaf(absolute_path),
    "imds": section(
        {
            "endpoint": leaf(http_endpoint),
            "timeout": leaf(positive_duration),
            "token_ttl": leaf(token_ttl),
            "allow_imdsv1": leaf(boolean),
            "user_data": leaf(boolean),
        }
    ),
    "rebalance": section({"enabled": leaf(boolean), "poll_interval": leaf(positive_duration)}),
    "hooks": hooks,
    "ecs": section(
        {
            "enabled": leaf(one_of(True, False, "auto")),
            "agent_url": leaf(http_url),
            "region": leaf(optional(text)),
            "drain": leaf(boolean),
            "stop": leaf(one_of("none", "standalone", "all")),
            "final_stop": leaf(boolean),
            "stop_timeout": leaf(non_negative_duration),
            "stop_reason": leaf(stop_reason),
            "reactivate": leaf(boolean),
        }
    ),
    "autoscaling": section(
        {
            "enabled": leaf(one_of(True, False, "auto")),
            "lifecycle_hook": leaf(optional(lifecycle_hook_name)),
            "budget": leaf(autoscaling_budget),
            "complete": leaf(boolean),
            "detach": leaf(boolean),
        }
    ),
    "scheduled_events": section(
        {
            "enabled": leaf(boolean),
            "poll_interval": leaf(positive_duration),
            "lead": leaf(non_negative_duration),
        }
    ),
    "load_balancer": section(
        {
            "enabled": leaf(one_of(True, False, "auto")),
            "target_groups": unique_list(target_group_arn, "target group ARNs"),
            "classic": unique_list(classic_load_balancer_name, "Classic Load Balancer names"),
            "wait": leaf(non_negative_duration),
        }
    ),
    "instance": section(
        {
            "after_response": leaf(one_of("none", "stop", "hibernate", "terminate")),
            "after_rebalance": leaf(one_of("none", "stop", "terminate")),
        }
    ),
    "hibernate": section(
        {
            "trigger": leaf(one_of("auto", "command", "none")),
            "command": leaf(command),
            "budget": leaf(positive_duration),
        }
    ),
    "log": section(
        {
            "level": leaf(one_of("debug", "info", "warning", "error", fold_case=True)),
            "format": leaf(one_of("auto", "journal", "json", "text")),
        }
    ),
    "metrics": section(
        {
            "textfile": leaf(optional(absolute_path)),
            "listen": leaf(optional(listen_address)),
        }
    ),
    # The URL's userinfo, path and query and the header values are secrets (CONTRACT §6).
    "webhook": section(
        {
            "url": leaf(optional(secret_http_url)),
            "headers": http_headers,
            "timeout": leaf(positive_duration),
            "retries": leaf(non_negative_integer),
            "format": leaf(one_of("json", "slack", "text")),
            "template": leaf(optional(message_template)),
        },
        secret=True,
    ),
    "events": section(
        {
            "sns_topic_arn": leaf(optional(sns_topic_arn)),
            "eventbridge_bus": leaf(optional(event_bus)),
        }
    ),
}

_check_layer = section(SECTIONS)


def check_layer(raw: Any) -> Tuple[Dict[str, Any], Problems]:
    """Normalise one layer's top-level mapping; returns (settings given, problems)."""
    problems: Problems = []
    if not isinstance(raw, dict):
        return {}, [f"expected a mapping of settings at the top level, got {describe(raw)}"]
    checked = _check_layer(raw, "", problems)
    return checked, problems


_SECTION_TYPES = {
    "imds": ImdsSettings,
    "rebalance": RebalanceSettings,
    "ecs": EcsSettings,
    "autoscaling": AutoscalingSettings,
    "scheduled_events": ScheduledEventsSettings,
    "load_balancer": LoadBalancerSettings,
    "instance": InstanceSettings,
    "hibernate": HibernateSettings,
    "log": LogSettings,
    "metrics": MetricsSettings,
    "webhook": WebhookSettings,
    "events": EventsSettings,
}


def build_config(merged: Mapping[str, Any], sources: Tuple[str, ...]) -> Config:
    """Turn merged, already-checked settings into a `Config`; absent keys keep defaults."""
    values: Dict[str, Any] = {}
    for item in fields(Config):
        if item.name not in merged:
            continue
        section_type = _SECTION_TYPES.get(item.name)
        value = merged[item.name]
        values[item.name] = section_type(**value) if section_type else value
    return Config(**values, sources=sources)
