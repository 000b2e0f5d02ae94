"""Reading the state directory from outside the daemon: `spotwatch status` and the sleep hook.

Read defensively: this is how an operator looks at a state folder in any condition, and
how the sleep hook learns what the daemon knows while the daemon may be writing. Anything
unreadable reads as absent; nothing here raises for a bad file.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Set, cast

from spotwatch.detection.notices import Notice
from spotwatch.detection.tracker import NoticeTracker
from spotwatch.state.files import POLL_FILE, STATE_FILE
from spotwatch.state.schema import FORMAT_VERSION, PollRecord, StateDocument, StepRecord

TORN_READ_RETRIES = 3


def _read_json(path: str) -> Optional[Dict[str, Any]]:
    # poll.json is rewritten in place every poll: a torn read is possible, and read again.
    for attempt in range(TORN_READ_RETRIES):
        try:
            with open(path, "rb") as handle:
                value = json.loads(handle.read().decode("utf-8"))
        except (OSError, ValueError, UnicodeDecodeError, RecursionError):
            if attempt < TORN_READ_RETRIES - 1 and os.path.exists(path):
                time.sleep(0.01)
                continue
            return None
        return value if isinstance(value, dict) else None
    return None


def parse_state(raw: bytes) -> Optional[StateDocument]:
    """A state document of this version, or None (records inside may still be damaged:
    `unusable_response` and `readable_step` judge those one by one)."""
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    valid = (
        isinstance(value, dict)
        and value.get("version") == FORMAT_VERSION
        and isinstance(value.get("trackers"), dict)
        and isinstance(value.get("responses"), dict)
    )
    return cast(StateDocument, value) if valid else None


def read_state(state_dir: str) -> Optional[StateDocument]:
    """state.json as `spotwatch status` and the sleep hook see it (None: absent or unusable)."""
    try:
        with open(os.path.join(state_dir, STATE_FILE), "rb") as handle:
            return parse_state(handle.read())
    except OSError:
        return None


def unusable_response(record: Any) -> Optional[str]:
    """Why a stored response record cannot be acted on, or None when it can."""
    if not isinstance(record, dict):
        return "not a mapping"
    try:
        Notice.from_json(record.get("notice"))  # type: ignore[arg-type]
    except (KeyError, TypeError, ValueError, AttributeError):
        return "its notice is unreadable"
    if not isinstance(record.get("steps"), list):
        return "its steps are not a list"
    return None


def readable_step(entry: Any) -> bool:
    return (
        isinstance(entry, dict)
        and isinstance(entry.get("name"), str)
        and isinstance(entry.get("status"), str)
    )



def read_poll(state_dir: str) -> Optional[PollRecord]:
    value = _read_json(os.path.join(state_dir, POLL_FILE))
    return value  # type: ignore[return-value]


@dataclass(frozen=True)
class ResponseView:
    """One response record as read, with its notice parsed (None when unreadable)."""

    key: str
    notice: Optional[Notice]
    raw_notice: Dict[str, Any]
    first_seen: Optional[str]
    deadline: Optional[str]
    done: bool
    steps: List[StepRecord]
    tracker: Optional[str] = None


def responses(state: Optional[StateDocument]) -> List[ResponseView]:
    """Every response record, in the order they were recorded."""
    found: List[ResponseView] = []
    records: Dict[str, Any] = dict(state["responses"]) if state is not None else {}
    for key, record in records.items():
        if not isinstance(record, dict):
            continue
        given = record.get("notice")
        raw: Dict[str, Any] = given if isinstance(given, dict) else {}
        try:
            notice: Optional[Notice] = Notice.from_json(raw)
        except (KeyError, TypeError, ValueError):
            notice = None
        steps = record.get("steps")
        found.append(
            ResponseView(
                key=str(key),
                notice=notice,
                raw_notice=raw,
                first_seen=_text(record.get("first_seen")),
                deadline=_text(record.get("deadline")),
                done=bool(record.get("done")),
                steps=[cast(StepRecord, s) for s in steps if isinstance(s, dict)]
                if isinstance(steps, list)
                else [],
                tracker=_text(record.get("tracker")),
            )
        )
    return found


def standing_responses(state: Optional[StateDocument]) -> Set[str]:
    """The response records of the notices the trackers know now (still standing)."""
    keys: Set[str] = set()
    trackers: Dict[str, Any] = dict(state["trackers"]) if state is not None else {}
    for name, value in trackers.items():
        tracker = NoticeTracker.from_json(value)
        if tracker.known is not None:
            keys.add(tracker.response_key(str(name)))
    return keys


@dataclass(frozen=True)
class WaitingView:
    """A scheduled event whose response waits for its moment (`waiting` in state.json)."""

    tracker: str
    raw_notice: Dict[str, Any]
    starts: Optional[str]
    deadline: Optional[str]


def waiting_events(state: Optional[StateDocument]) -> List[WaitingView]:
    found: List[WaitingView] = []
    records: Any = state.get("waiting") if state is not None else None
    for tracker, record in (records if isinstance(records, dict) else {}).items():
        if not isinstance(record, dict) or not isinstance(record.get("notice"), dict):
            continue
        found.append(
            WaitingView(
                str(tracker),
                record["notice"],
                _text(record.get("starts")),
                _text(record.get("deadline")),
            )
        )
    return found


def known_notices(state: Optional[StateDocument]) -> Dict[str, Notice]:
    """The notice each tracker knows now (tracker key -> notice)."""
    known: Dict[str, Notice] = {}
    trackers: Dict[str, Any] = dict(state["trackers"]) if state is not None else {}
    for name, tracker in trackers.items():
        value = tracker.get("known") if isinstance(tracker, dict) else None
        if not isinstance(value, dict):
            continue
        try:
            known[str(name)] = Notice.from_json(value)
        except (KeyError, TypeError, ValueError):
            continue
    return known


def _text(value: Any) -> Optional[str]:
    return value if isinstance(value, str) else None
