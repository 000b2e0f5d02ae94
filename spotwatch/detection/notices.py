"""What IMDS tells us, turned into `Notice` values.

The parsers never raise on bad input from the wire: they return a `Parsed` saying whether
the body was a notice, no notice, or unusable (with a short reason for the log). What an
unusable body means is the watcher's business (CONTRACT.md §3: instance-action that gives
no usable answer falls back to termination-time).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
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
        time = parse_utc_time(data["time"])
        if time is None:
            raise ValueError(f"not a UTC time: {data['time']!r}")
        return cls(action=data["action"], time=time, time_text=data["time"], source=data["source"])


@dataclass(frozen=True)
class Parsed:
    notice: Optional[Notice] = None
    problem: Optional[str] = None  # set when the body was unusable

    @property
    def usable(self) -> bool:
        return self.problem is None


NO_NOTICE = Parsed()


def parse_utc_time(text: str) -> Optional[datetime]:
    """Parse IMDS's `YYYY-MM-DDTHH:MM:SSZ` (fractions and +00:00 tolerated); None if not a UTC time."""
    text = text.strip()
    if not text or len(text) > 40:
        return None
    candidate = text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text
    try:
        parsed = datetime.fromisoformat(candidate.replace("t", "T"))
    except ValueError:
        return None
    if parsed.tzinfo is None or parsed.utcoffset() != timezone.utc.utcoffset(None):
        return None
    return parsed.astimezone(timezone.utc)


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
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def parse_instance_action(body: bytes) -> Parsed:
    """`{"action": "terminate|stop|hibernate", "time": "..."}` from spot/instance-action (a 200)."""
    data = _json_object(body)
    if data is None:
        return Parsed(problem="instance-action body is not a JSON object")
    action, time_text = data.get("action"), data.get("time")
    if action not in NOTICE_ACTIONS:
        return Parsed(problem=f"instance-action has unknown action {action!r}")
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


def excerpt(body: bytes, limit: int = 120) -> str:
    """A printable, truncated view of a body for one log line."""
    text = body[:limit].decode("utf-8", "replace")
    shown = text.encode("unicode_escape").decode("ascii")
    return shown + ("…" if len(body) > limit else "")
