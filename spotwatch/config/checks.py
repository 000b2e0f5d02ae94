"""The checks a layer's settings are made of: a leaf value, a section of known keys, a map
of names to strings, a list of distinct values. Each records its problems (naming the key
path) and returns the normalised value, or INVALID. config/validate.py builds the schema
from them."""

from __future__ import annotations

import re
from typing import Any, Callable, Dict, List, Mapping, Optional

from spotwatch.config.errors import describe, describe_secret, key_path_of, unknown_key
from spotwatch.config.values import Leaf, scalar_text

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


def is_mapping(value: Any, path: str, problems: Problems, *, secret: bool = False) -> bool:
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
        if not is_mapping(value, path, problems, secret=secret):
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
        if not is_mapping(value, path, problems, secret=secret):
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
