"""Durations as operators write them: seconds as a number, or "500ms", "5s", "2m", "6h", "1m30s"."""

from __future__ import annotations

import math
import re
from typing import Union

from spotwatch.config.errors import describe

_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_PART = re.compile(rf"({_NUMBER})\s*(ms|s|m|h)")
# A bare number, or one or more number+unit parts ("1m30s"), largest unit first by convention.
_WHOLE = re.compile(rf"\s*(?:{_NUMBER}|(?:{_NUMBER}\s*(?:ms|s|m|h)\s*)+)\s*")


def parse_duration(value: object) -> float:
    """Return `value` as float seconds, or raise ValueError with a one-line message.

    Numbers are seconds. Strings may be a bare number ("5") or number+unit parts with units
    ms, s, m, h ("500ms", "1.5s", "2m", "6h", "1m30s"). Booleans are refused even though
    Python counts them as ints: `timeout: yes` is a typo, not one second.
    """
    if isinstance(value, bool):
        raise ValueError(f'expected a duration like "30s", got {describe(value)}')
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and _WHOLE.fullmatch(value):
        stripped = value.strip()
        try:
            seconds = float(stripped)
        except ValueError:
            seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _PART.findall(stripped))
    elif isinstance(value, str) and _WHOLE.fullmatch(value.strip().removeprefix("-")):
        raise ValueError(f"expected a non-negative duration, got {describe(value)}")
    else:
        raise ValueError(f'expected a duration like "30s", got {describe(value)}')
    if math.isnan(seconds) or math.isinf(seconds):
        raise ValueError(f'expected a duration like "30s", got {describe(value)}')
    if seconds < 0:
        raise ValueError(f"expected a non-negative duration, got {describe(value)}")
    return seconds


def _trim(number: float) -> str:
    """Up to three decimals, without trailing zeros: 1.5 -> "1.5", 2.0 -> "2"."""
    text = f"{number:.3f}".rstrip("0").rstrip(".")
    return text or "0"


def format_duration(seconds: Union[int, float]) -> str:
    """Render seconds the way an operator would write them; `parse_duration` reads it back.

    0.5 -> "500ms", 5 -> "5s", 90 -> "1m30s", 21600 -> "6h", 1.25 -> "1.25s".
    """
    if seconds < 0:
        return "-" + format_duration(-seconds)
    if seconds == 0:
        return "0s"
    if seconds < 1:
        return _trim(seconds * 1000) + "ms"
    # Work in whole milliseconds so float noise cannot produce "59.999999s".
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    parts = []
    if hours:
        parts.append(f"{hours}h")
    if minutes:
        parts.append(f"{minutes}m")
    if millis:
        parts.append(_trim(millis / 1000) + "s")
    return "".join(parts)
