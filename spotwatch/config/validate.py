"""Check one layer of raw YAML settings and normalise it, collecting every problem.

Each layer (a file, a conf.d file, the user-data section) is checked on its own, so a
problem can name the layer it came from. That works because nothing spans layers: hooks
are a list, and a later list replaces an earlier one whole.

Normalised values are what the dataclasses in `schema` hold: durations as float seconds,
lists as tuples, hooks as `HookSpec`. Layers are then merged by `load`, and the merge
is turned into a `Config` by `build_config`.
"""

from __future__ import annotations

import difflib
import re
import string
from dataclasses import fields
from typing import Any, Callable, Dict, List, Mapping, Optional, Set, Tuple
from urllib.parse import urlsplit

from spotwatch.config.durations import parse_duration
from spotwatch.config.errors import describe
from spotwatch.config.schema import (
    HOOK_ACTIONS,
    Config,
    EcsSettings,
    HibernateSettings,
    HookSpec,
    ImdsSettings,
    InstanceSettings,
    LogSettings,
    MetricsSettings,
    RebalanceSettings,
    WebhookSettings,
)

Problems = List[str]


class _Invalid:
    """Marks a value that failed its check (its problem is already recorded)."""


INVALID: Any = _Invalid()

# A check gets the raw value and its key path, records problems, and returns the
# normalised value or INVALID.
Check = Callable[[Any, str, Problems], Any]
# A leaf check normalises one scalar or raises ValueError with the message.
Leaf = Callable[[Any], Any]


def leaf(convert: Leaf) -> Check:
    def check(value: Any, path: str, problems: Problems) -> Any:
        try:
            return convert(value)
        except ValueError as error:
            problems.append(f"{path}: {error}")
            return INVALID

    return check


# --- scalar conversions (raise ValueError) ------------------------------------------


def boolean(value: Any) -> bool:
    # YAML already reads yes/no/on/off as booleans; a quoted "yes" is a string on purpose.
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {describe(value)}")
    return value


def integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an integer, got {describe(value)}")
    return int(value)


def non_negative_integer(value: Any) -> int:
    number = integer(value)
    if number < 0:
        raise ValueError(f"must be >= 0, got {number}")
    return number


def text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a non-empty string, got {describe(value)}")
    return value


def optional(convert: Leaf) -> Leaf:
    return lambda value: None if value is None else convert(value)


def one_of(*choices: Any, fold_case: bool = False) -> Leaf:
    def convert(value: Any) -> Any:
        candidate = value.lower() if fold_case and isinstance(value, str) else value
        # `bool` is an int subclass: keep True from matching 1 (and so on) by type-checking too.
        for choice in choices:
            if type(candidate) is type(choice) and candidate == choice:
                return choice
        shown = " | ".join(describe(c).strip('"') for c in choices)
        raise ValueError(f"expected one of {shown}, got {describe(value)}")

    return convert


def duration_at_least(minimum: float, *, inclusive: bool = True) -> Leaf:
    def convert(value: Any) -> float:
        seconds = parse_duration(value)
        if seconds < minimum or (not inclusive and seconds == minimum):
            relation = ">=" if inclusive else ">"
            raise ValueError(f"must be {relation} {minimum:g}s, got {describe(value)}")
        return seconds

    return convert


positive_duration = duration_at_least(0.0, inclusive=False)
non_negative_duration = duration_at_least(0.0)


def token_ttl(value: Any) -> float:
    seconds = parse_duration(value)
    if not 1.0 <= seconds <= 21600.0:
        raise ValueError(f"must be between 1s and 6h (as IMDS allows), got {describe(value)}")
    return seconds


def absolute_path(value: Any) -> str:
    path = text(value)
    if not path.startswith("/"):
        raise ValueError(f"expected an absolute path, got {describe(value)}")
    return path


def _split_http_url(value: Any) -> Tuple[str, Any]:
    if not isinstance(value, str):
        raise ValueError(f"expected an http:// or https:// URL, got {describe(value)}")
    try:
        parts = urlsplit(value.strip())
        parts.port  # noqa: B018 -- evaluated for its ValueError on a bad port
    except ValueError as error:
        raise ValueError(f"not a valid URL ({error}): {describe(value)}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http:// or https:// URL, got {describe(value)}")
    return value.strip(), parts


def http_url(value: Any) -> str:
    return _split_http_url(value)[0]


def http_endpoint(value: Any) -> str:
    """http(s)://host[:port], nothing after it: IMDS paths are appended to it."""
    url, parts = _split_http_url(value)
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ValueError(f"expected http(s)://host[:port] with no path, got {describe(value)}")
    return url.rstrip("/")


def listen_address(value: Any) -> str:
    if not isinstance(value, str) or ":" not in value:
        raise ValueError(f'expected "host:port" like "127.0.0.1:9464", got {describe(value)}')
    host, _, port = value.rpartition(":")
    if not host.strip("[]") or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(
            f'expected "host:port" with a port 1..65535 like "127.0.0.1:9464", '
            f"got {describe(value)}"
        )
    return value


def stop_reason(value: Any) -> str:
    reason = text(value)
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(reason) if name is not None]
    except ValueError as error:
        raise ValueError(f"not a valid template ({error}); write a literal brace as {{{{") from None
    for name in names:
        if name not in ("action", "time"):
            raise ValueError(
                f"unknown field {{{name}}}: only {{action}} and {{time}} are filled in"
            )
    return reason


def command(value: Any) -> Any:
    """An argv list (run without a shell) or a string (run by /bin/sh -c)."""
    if isinstance(value, str):
        if not value.strip():
            raise ValueError("expected a non-empty command")
        return value
    if isinstance(value, list):
        if not value:
            raise ValueError("expected a non-empty argv list")
        for arg in value:
            if not isinstance(arg, str):
                raise ValueError(f"argv items must be strings (quote them), got {describe(arg)}")
        if not value[0].strip():
            raise ValueError("the program (first argv item) must not be empty")
        return tuple(value)
    raise ValueError(
        f"expected an argv list of strings or a shell command string, got {describe(value)}"
    )


def run_as_user(value: Any) -> Any:
    if value is None or (isinstance(value, str) and value.strip()):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise ValueError(f"expected a user name, a uid >= 0, or null, got {describe(value)}")


def scalar_text(value: Any) -> str:
    """YAML turns `PORT: 8080` into an int; environment values are strings in the end."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    raise ValueError(f"expected a string, got {describe(value)}")


# --- compound checks (record problems themselves) -----------------------------------


def _unknown_key(path: str, key: Any, known: Any) -> str:
    close = difflib.get_close_matches(str(key), [str(k) for k in known], n=1)
    hint = f' (did you mean "{close[0]}"?)' if close else ""
    return f"{path}: unknown key{hint}"


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _is_mapping(value: Any, path: str, problems: Problems) -> bool:
    if isinstance(value, dict):
        return True
    problems.append(f"{path}: expected a mapping, got {describe(value)}")
    return False


def section(spec: Mapping[str, Check]) -> Check:
    """A mapping with known keys; returns only the keys given (later layers merge into it)."""

    def check(value: Any, path: str, problems: Problems) -> Any:
        if value is None:  # `imds:` with every line commented out
            return {}
        if not _is_mapping(value, path, problems):
            return INVALID
        result: Dict[str, Any] = {}
        for key, raw in value.items():
            key_path = _join(path, key)
            if key not in spec:
                problems.append(_unknown_key(key_path, key, spec))
                continue
            checked = spec[key](raw, key_path, problems)
            if checked is not INVALID:
                result[key] = checked
        return result

    return check


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def _string_map(name_pattern: Any, name_rule: str, reserved_prefix: Optional[str] = None) -> Check:
    def check(value: Any, path: str, problems: Problems) -> Any:
        if value is None:
            return {}
        if not _is_mapping(value, path, problems):
            return INVALID
        result: Dict[str, str] = {}
        for key, raw in value.items():
            key_path = _join(path, key)
            if not isinstance(key, str) or not name_pattern.fullmatch(key):
                problems.append(f"{key_path}: not a valid {name_rule}")
                continue
            if reserved_prefix and key.startswith(reserved_prefix):
                problems.append(f"{key_path}: {reserved_prefix}* names are set by spotwatch")
                continue
            try:
                converted = scalar_text(raw)
            except ValueError as error:
                problems.append(f"{key_path}: {error}")
                continue
            if "\n" in converted or "\r" in converted or "\0" in converted:
                problems.append(f"{key_path}: must not contain line breaks or NUL")
                continue
            result[key] = converted
        return result

    return check


hook_env = _string_map(_ENV_NAME, "environment variable name", reserved_prefix="SPOTWATCH_")
http_headers = _string_map(_HEADER_NAME, "HTTP header name")


def hook_actions(value: Any, path: str, problems: Problems) -> Any:
    if not isinstance(value, list) or not value:
        problems.append(
            f"{path}: expected a non-empty list of {', '.join(HOOK_ACTIONS)}, got {describe(value)}"
        )
        return INVALID
    seen: Set[str] = set()
    ok = True
    for index, action in enumerate(value):
        if action not in HOOK_ACTIONS:
            choices = " | ".join(HOOK_ACTIONS)
            problems.append(f"{path}[{index}]: expected one of {choices}, got {describe(action)}")
            ok = False
        elif action in seen:
            problems.append(f"{path}[{index}]: {action} is listed twice")
            ok = False
        seen.add(action)
    return tuple(value) if ok else INVALID


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


# --- the whole layout of §2 ------------------------------------------------------------

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
    "rebalance": section({"enabled": leaf(boolean)}),
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
    "webhook": section(
        {
            "url": leaf(optional(http_url)),
            "headers": http_headers,
            "timeout": leaf(positive_duration),
            "retries": leaf(non_negative_integer),
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
    "instance": InstanceSettings,
    "hibernate": HibernateSettings,
    "log": LogSettings,
    "metrics": MetricsSettings,
    "webhook": WebhookSettings,
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
