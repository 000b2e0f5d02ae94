"""Check one layer of raw YAML settings and normalise it, collecting every problem.

Each layer (a file, a conf.d file, the user-data section) is checked on its own, so a
problem can name the layer it came from. That works because nothing spans layers: hooks
are a list, and a later list replaces an earlier one whole.

Normalised values are what the dataclasses in `schema` hold: durations as float seconds,
lists as tuples, hooks as `HookSpec`. Layers are then merged by `load`, and the merge
is turned into a `Config` by `build_config`.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any, Dict, Mapping, Tuple

from spotwatch.config.checks import Check, Problems, http_headers, leaf, section, unique_list
from spotwatch.config.errors import describe
from spotwatch.config.hooks import hooks
from spotwatch.config.schema import (
    CLOUD_NAMES,
    AutoscalingSettings,
    AzureSettings,
    Config,
    EcsSettings,
    EventsSettings,
    GcpSettings,
    HibernateSettings,
    ImdsSettings,
    InstanceSettings,
    LoadBalancerSettings,
    LogSettings,
    MetricsSettings,
    RebalanceSettings,
    ScheduledEventsSettings,
    ShutdownSettings,
    WebhookSettings,
)
from spotwatch.config.template import message_template
from spotwatch.config.values import (
    absolute_path,
    autoscaling_budget,
    boolean,
    classic_load_balancer_name,
    command,
    docker_host,
    event_bus,
    http_endpoint,
    http_url,
    lifecycle_hook_name,
    listen_address,
    non_negative_duration,
    non_negative_integer,
    one_of,
    optional,
    positive_duration,
    secret_http_url,
    sns_topic_arn,
    stop_reason,
    target_group_arn,
    text,
    token_ttl,
)

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
            "stop_via": leaf(one_of("auto", "api", "runtime")),
            "docker_host": leaf(docker_host),
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
    "shutdown": section(
        {
            "enabled": leaf(one_of(True, False, "auto")),
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
    "cloud": leaf(one_of("auto", *CLOUD_NAMES)),
    "gcp": section({"endpoint": leaf(http_endpoint), "notice": leaf(positive_duration)}),
    "azure": section({"endpoint": leaf(http_endpoint), "acknowledge": leaf(boolean)}),
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
    "shutdown": ShutdownSettings,
    "log": LogSettings,
    "metrics": MetricsSettings,
    "webhook": WebhookSettings,
    "events": EventsSettings,
    "gcp": GcpSettings,
    "azure": AzureSettings,
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
