"""What IMDS tells us, turned into `Notice` values.

The parsers never raise on bad input from the wire: they return a `Parsed` saying whether
the body was a notice, no notice, or unusable (with a short reason for the log). What an
unusable body means is the monitor's business (an instance-action that gives no usable
answer falls back to termination-time).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Dict, Literal, NewType, Optional, Tuple, get_args

from spotwatch.config.schema import NOTICE_ACTIONS

# What a notice asks of the instance: the actions hooks subscribe to. `resume`, `start`,
# `cancel` and `shutdown` are notices the daemon makes itself (a resume seen, a new boot, a
# withdrawn event, a system shutdown logind announced with no notice before it).
Action = Literal[
    "terminate",
    "stop",
    "hibernate",
    "rebalance",
    "resume",
    "reboot",
    "maintenance",
    "start",
    "cancel",
    "shutdown",
]
# The closed set, spelled once (in the Literal) and read back from it.
ACTIONS: Tuple[Action, ...] = get_args(Action)

# Where a notice came from: SPOTWATCH_SOURCE for hooks, `source` in state, events and metrics.
# Each cloud names the sources of its own signals beside its monitors (clouds/<cloud>/); the
# ones here are AWS's and those the daemon makes itself. A source read back from the state
# file is checked by its form (`as_source`), so a cloud added later needs no change here.
Source = NewType("Source", str)

SOURCE_INSTANCE_ACTION = Source("instance-action")
SOURCE_TERMINATION_TIME = Source("termination-time")
SOURCE_REBALANCE = Source("rebalance-recommendation")
SOURCE_TARGET_LIFECYCLE_STATE = Source("target-lifecycle-state")
SOURCE_RESUME_DETECTED = Source("resume-detected")
SOURCE_SLEEP_HOOK = Source("sleep-hook")
SOURCE_REHEARSAL = Source("rehearsal")
SOURCE_SCHEDULED = Source("scheduled-event")
SOURCE_INSTANCE_START = Source("instance-start")
SOURCE_SHUTDOWN = Source("shutdown")
_SOURCE_FORM = re.compile(r"[a-z][a-z0-9-]{0,39}")

REBALANCE: Action = "rebalance"
SHUTDOWN: Action = "shutdown"


# Lookups rather than casts: the checked value comes back typed, on every mypy version.
_ACTION_OF: Dict[str, Action] = {action: action for action in ACTIONS}


def as_action(value: object) -> Action:
    """A stored or parsed action, checked; ValueError for anything else."""
    found = _ACTION_OF.get(value) if isinstance(value, str) else None
    if found is None:
        raise ValueError(f"not an action: {str(value)[:40]!r}")
    return found


def as_source(value: object) -> Source:
    """A stored source, checked by its form (lower-case words joined by hyphens)."""
    if not isinstance(value, str) or not _SOURCE_FORM.fullmatch(value):
        raise ValueError(f"not a source: {str(value)[:40]!r}")
    return Source(value)


@dataclass(frozen=True)
class Notice:
    """One signal that the instance is going away (or may be), as the daemon knows it.

    `time` is the moment the signal names: the interruption time of a Spot notice, a
    scheduled event's NotBefore, when a rebalance recommendation was issued. Signals that
    come with an identity of their own (a scheduled event's EventId) carry it in `event_id`,
    so several can be known at once.
    """

    action: Action
    time: datetime  # aware, UTC
    time_text: str  # as the hooks get it in SPOTWATCH_NOTICE_TIME (IMDS's own text when ISO)
    source: Source
    event_id: Optional[str] = None
    event_code: Optional[str] = None
    # Set when `source` was relabelled (a rehearsal says "rehearsal" to hooks and events):
    # the signal the notice really came from, which decides what the response does.
    origin: Optional[Source] = None

    @property
    def signal(self) -> Source:
        """The signal this notice came from, whatever it is labelled as."""
        return self.origin or self.source
    # A `cancel` notice: the action of the scheduled event that was called off.
    canceled_action: Optional[str] = None

    @property
    def epoch(self) -> float:
        return self.time.timestamp()

    @property
    def identity(self) -> str:
        """Which of a monitor's notices this is ("" for monitors that know one at a time)."""
        return self.event_id or ""

    def to_json(self) -> Dict[str, str]:
        data = {"action": self.action, "time": self.time_text, "source": self.source}
        if self.event_id is not None:
            data["event_id"] = self.event_id
        if self.event_code is not None:
            data["event_code"] = self.event_code
        if self.origin is not None:
            data["origin"] = self.origin
        if self.canceled_action is not None:
            data["canceled_action"] = self.canceled_action
        return data

    @classmethod
    def from_json(cls, data: Dict[str, str]) -> Notice:
        """Rebuild from `to_json()`; raises KeyError or ValueError on anything else."""
        time_text = data["time"]
        if not isinstance(time_text, str):
            raise ValueError("a stored notice needs a string time")
        time = parse_utc_time(time_text)
        if time is None:
            raise ValueError(f"not a UTC time: {time_text[:40]!r}")
        event_id, event_code = data.get("event_id"), data.get("event_code")
        origin = data.get("origin")
        canceled = data.get("canceled_action")
        for value in (event_id, event_code, canceled):
            if value is not None and not isinstance(value, str):
                raise ValueError("a stored notice's event id and code are strings")
        return cls(
            action=as_action(data["action"]),
            time=time,
            time_text=time_text,
            source=as_source(data["source"]),
            event_id=event_id,
            event_code=event_code,
            origin=as_source(origin) if origin is not None else None,
            canceled_action=None if canceled is None else as_action(canceled),
        )


def response_starts(event: Notice, lead: float) -> float:
    """The wall moment the response to a scheduled event (AWS's, Azure's) starts: NotBefore -
    `scheduled_events.lead` (the intake waits for it; `status` and metrics show it)."""
    return event.epoch - lead


def now_notice(action: Action, source: Source, wall: Optional[float] = None) -> Notice:
    """A notice the daemon makes itself (a resume, a start), timed now (or at `wall`)."""
    moment = datetime.fromtimestamp(time.time() if wall is None else wall, timezone.utc)
    moment = moment.replace(microsecond=0)
    return Notice(action, moment, iso_text(moment), source)


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


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
# `21 Jan 2019 09:00:43 GMT` (AWS's scheduled events), with the weekday first as RFC 1123 has
# it (`Mon, 19 Sep 2016 18:29:47 GMT`, Azure's), and nothing else: a one-digit day is allowed
# (Go's and Java's RFC 1123 writers may drop the zero), every other part is fixed.
_HTTP_TIME = re.compile(
    r"(?:(" + "|".join(_WEEKDAYS) + r"), )?([0-9]{1,2}) (" + "|".join(_MONTHS) + r") "
    r"([0-9]{4}) ([0-9]{2}):([0-9]{2}):([0-9]{2}) GMT"
)


def parse_http_time(text: object, *, weekday: bool = False) -> Optional[datetime]:
    """An RFC 1123 time in GMT, strictly (`weekday`: it must start with one, as Azure's do;
    else it must not, as AWS's do); None for anything else. The weekday is not checked
    against the date: the date is what counts."""
    if not isinstance(text, str) or len(text) > 40:
        return None
    match = _HTTP_TIME.fullmatch(text)
    if match is None or (match.group(1) is not None) != weekday:
        return None
    _, day, month, year, hour, minute, second = match.groups()
    try:
        return datetime(
            int(year),
            _MONTHS.index(month) + 1,
            int(day),
            int(hour),
            int(minute),
            int(second),
            tzinfo=timezone.utc,
        )
    except ValueError:  # 31 Feb, 25:00:00
        return None


def iso_text(moment: datetime) -> str:
    """A time as hooks get it in SPOTWATCH_NOTICE_TIME: `2019-01-21T09:00:43Z`."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


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
    return Parsed(Notice(as_action(action), time, time_text, SOURCE_INSTANCE_ACTION))


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
