"""What IMDS tells us, turned into `Notice` values.

The parsers never raise on bad input from the wire: they return a `Parsed` saying whether
the body was a notice, no notice, or unusable (with a short reason for the log). What an
unusable body means is the watcher's business (CONTRACT.md §3: instance-action that gives
no usable answer falls back to termination-time).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Optional

from spotwatch.config.schema import NOTICE_ACTIONS

SOURCE_INSTANCE_ACTION = "instance-action"
SOURCE_TERMINATION_TIME = "termination-time"
SOURCE_REBALANCE = "rebalance-recommendation"
SOURCE_SLEEP_HOOK = "sleep-hook"
SOURCE_REHEARSAL = "rehearsal"

REBALANCE = "rebalance"


@dataclass(frozen=True)
class Notice:
    """One interruption notice (or rebalance recommendation) as IMDS gave it."""

    action: str  # terminate | stop | hibernate | rebalance
    time: datetime  # aware, UTC
    time_text: str  # exactly as IMDS wrote it, for SPOTWATCH_NOTICE_TIME
    source: str

    @property
    def epoch(self) -> float:
        return self.time.timestamp()

    def to_json(self) -> dict[str, str]:
        return {"action": self.action, "time": self.time_text, "source": self.source}

    @classmethod
    def from_json(cls, data: dict[str, str]) -> Notice:
        """Rebuild from `to_json()`; raises KeyError or ValueError on anything else."""
        action, time_text, source = data["action"], data["time"], data["source"]
        if not all(isinstance(value, str) for value in (action, time_text, source)):
            raise ValueError("a stored notice needs string action, time and source")
        time = parse_utc_time(time_text)
        if time is None:
            raise ValueError(f"not a UTC time: {time_text[:40]!r}")
        return cls(action=action, time=time, time_text=time_text, source=source)


@dataclass(frozen=True)
class Parsed:
    notice: Optional[Notice] = None
    problem: Optional[str] = None  # set when the body was unusable

    @property
    def usable(self) -> bool:
        return self.problem is None


NO_NOTICE = Parsed()


# IMDS writes `YYYY-MM-DDTHH:MM:SSZ`. Parsed by hand rather than with `fromisoformat`, whose
# accepted forms grew between Python 3.9 and 3.11: the same body must mean the same everywhere.
_UTC_TIME = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:\.([0-9]{1,9}))?(?:[Zz]|\+00:00)"
)


def parse_utc_time(text: str) -> Optional[datetime]:
    """Parse IMDS's `YYYY-MM-DDTHH:MM:SSZ` (fractions, `+00:00` tolerated); None if not UTC."""
    match = _UTC_TIME.fullmatch(text.strip()) if len(text) <= 64 else None
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(part) for part in match.groups()[:6])
    try:
        parsed = datetime(year, month, day, hour, minute, second, tzinfo=timezone.utc)
    except ValueError:
        return None
    fraction = match.group(7)
    if fraction:
        parsed += timedelta(microseconds=int(fraction[:6].ljust(6, "0")))
    return parsed


def _decode(body: bytes) -> Optional[str]:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _json_object(body: bytes) -> Optional[dict[str, object]]:
    text = _decode(body)
    if text is None:
        return None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):  # deep nesting raises RecursionError
        return None
    return value if isinstance(value, dict) else None


def parse_instance_action(body: bytes) -> Parsed:
    """`{"action": "terminate|stop|hibernate", "time": "..."}` from spot/instance-action (a 200)."""
    data = _json_object(body)
    if data is None:
        return Parsed(problem="instance-action body is not a JSON object")
    action, time_text = data.get("action"), data.get("time")
    if action not in NOTICE_ACTIONS:
        return Parsed(problem=f"instance-action has unknown action {_short(action)}")
    if not isinstance(time_text, str):
        return Parsed(problem="instance-action has no time")
    time = parse_utc_time(time_text)
    if time is None:
        return Parsed(problem=f"instance-action time {time_text[:40]!r} is not a UTC time")
    assert isinstance(action, str)
    return Parsed(Notice(action, time, time_text, SOURCE_INSTANCE_ACTION))


def parse_termination_time(body: bytes) -> Parsed:
    """spot/termination-time: a UTC time is a terminate notice; anything else is none (§3)."""
    text = _decode(body)
    time = parse_utc_time(text) if text is not None else None
    if time is None or text is None:
        return NO_NOTICE
    return Parsed(Notice("terminate", time, text.strip(), SOURCE_TERMINATION_TIME))


def parse_rebalance(body: bytes) -> Parsed:
    """`{"noticeTime": "..."}` from events/recommendations/rebalance (a 200)."""
    data = _json_object(body)
    time_text = data.get("noticeTime") if data is not None else None
    if not isinstance(time_text, str):
        return Parsed(problem="rebalance body has no noticeTime")
    time = parse_utc_time(time_text)
    if time is None:
        return Parsed(problem=f"rebalance noticeTime {time_text[:40]!r} is not a UTC time")
    return Parsed(Notice(REBALANCE, time, time_text, SOURCE_REBALANCE))


def _short(value: object, limit: int = 40) -> str:
    """repr() of a value from the wire, cut short for a log line."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def excerpt(body: bytes, limit: int = 120) -> str:
    """A printable, truncated view of a body for one log line."""
    text = body[:limit].decode("utf-8", "replace")
    shown = text.encode("unicode_escape").decode("ascii")
    return shown + ("…" if len(body) > limit else "")
