"""The building blocks of validation: a `Check` gets a raw value and its key path, records
every problem it finds (one line each, naming the key path) and returns the normalised value,
or INVALID. `validate` (the whole layout), `hooks` (the hooks list) and each preset's `with:`
arguments (spotwatch.presets) are made of these.
"""

from __future__ import annotations

import difflib
import re
from typing import Any, Callable, Dict, List, Mapping, Optional

from spotwatch.config.errors import describe
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


def unknown_key(path: str, key: Any, known: Any) -> str:
    close = difflib.get_close_matches(str(key), [str(k) for k in known], n=1)
    hint = f' (did you mean "{close[0]}"?)' if close else ""
    return f"{path}: unknown key{hint}"


# A key shown as it is in a key path; any other key (newlines, control or bidi characters,
# very long, not a string) is shown quoted and escaped, so each problem stays one line.
_PLAIN_KEY = re.compile(r"[\w .:/@+-]{1,40}")


def join(path: str, key: Any) -> str:
    shown = key if isinstance(key, str) and _PLAIN_KEY.fullmatch(key) else describe(key)
    return f"{path}.{shown}" if path else shown


def is_mapping(value: Any, path: str, problems: Problems) -> bool:
    if isinstance(value, dict):
        return True
    problems.append(f"{path}: expected a mapping, got {describe(value)}")
    return False


def section(spec: Mapping[str, Check]) -> Check:
    """A mapping with known keys; returns only the keys given (later layers merge into it)."""

    def check(value: Any, path: str, problems: Problems) -> Any:
        if value is None:  # `imds:` with every line commented out
            return {}
        if not is_mapping(value, path, problems):
            return INVALID
        result: Dict[str, Any] = {}
        for key, raw in value.items():
            key_path = join(path, key)
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


def string_map(name_pattern: Any, name_rule: str, reserved_prefix: Optional[str] = None) -> Check:
    def check(value: Any, path: str, problems: Problems) -> Any:
        if value is None:
            return {}
        if not is_mapping(value, path, problems):
            return INVALID
        result: Dict[str, str] = {}
        for key, raw in value.items():
            key_path = join(path, key)
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


hook_env = string_map(_ENV_NAME, "environment variable name", reserved_prefix="SPOTWATCH_")
http_headers = string_map(_HEADER_NAME, "HTTP header name")


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
