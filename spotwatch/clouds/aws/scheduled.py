"""Scheduled events: what `meta-data/events/maintenance/scheduled` says, as notices.

IMDS answers a JSON list of events (`Code`, `Description`, `EventId`, `NotBefore`, `NotAfter`,
`State`), `[]` when there are none; some stand-ins answer 404 instead, which means none too.
Each event is a notice of its own, identified by its EventId (the watcher keeps a tracker per
event). An `active` event is a notice of the action its code means; a `canceled` one is a
`cancel` notice for the same event, so the tracker that knew it active sees its action change;
a `completed` one is no notice at all. IMDS writes times as `21 Jan 2019 09:00:43 GMT`; hooks
get NotBefore as `2019-01-21T09:00:43Z`. An event whose time or code cannot be read is
ignored (the monitor, `ScheduledEventsMonitor` in detection/monitors.py, logs it once).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Dict, List, Optional, Tuple

from spotwatch.detection.notices import SOURCE_SCHEDULED, Action, Notice, iso_text, parse_http_time

SCHEDULED = "meta-data/events/maintenance/scheduled"

# What each event code asks of the instance.
EVENT_ACTIONS: Dict[str, Action] = {
    "instance-stop": "stop",
    "instance-retirement": "stop",
    "instance-reboot": "reboot",
    "system-reboot": "reboot",
    "system-maintenance": "maintenance",
}


def parse_event_time(text: object) -> Optional[datetime]:
    """IMDS's scheduled-event time (`21 Jan 2019 09:00:43 GMT`), strictly; None for anything
    else."""
    return parse_http_time(text)


@dataclass(frozen=True)
class EventList:
    notices: Tuple[Notice, ...]  # active events and canceled ones (as `cancel` notices)
    problems: Tuple[str, ...]  # one line per event that could not be read


def parse_event(event: object) -> Tuple[Optional[Notice], Optional[str]]:
    """One event of the list: (notice or None, problem or None)."""
    if not isinstance(event, dict):
        return None, "an event is not a JSON object"
    event_id, code, state = event.get("EventId"), event.get("Code"), event.get("State")
    if not isinstance(event_id, str) or not event_id or len(event_id) > 64:
        return None, "an event has no usable EventId"
    if state == "completed":
        return None, None
    if state not in ("active", "canceled"):
        return None, f"event {event_id}: unknown State {str(state)[:20]!r}"
    action = EVENT_ACTIONS.get(code) if isinstance(code, str) else None
    if action is None:
        return None, f"event {event_id}: unknown Code {str(code)[:40]!r}"
    assert isinstance(code, str)
    not_before = parse_event_time(event.get("NotBefore"))
    if not_before is None:
        shown = str(event.get("NotBefore"))[:40]
        return None, f"event {event_id}: NotBefore {shown!r} is not like '21 Jan 2019 09:00:43 GMT'"
    notice = Notice(action, not_before, iso_text(not_before), SOURCE_SCHEDULED, event_id, code)
    if state == "canceled":
        notice = Notice(
            "cancel",
            not_before,
            notice.time_text,
            SOURCE_SCHEDULED,
            event_id,
            code,
            canceled_action=action,
        )
    return notice, None


def parse_scheduled(body: bytes) -> Tuple[Optional[EventList], Optional[str]]:
    """The whole answer (a 200): the events, or why the body is unusable."""
    try:
        value = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None, "scheduled events body is not JSON"
    if not isinstance(value, list):
        return None, "scheduled events body is not a JSON list"
    notices: List[Notice] = []
    problems: List[str] = []
    for event in value[:100]:
        notice, problem = parse_event(event)
        if notice is not None:
            notices.append(notice)
        if problem is not None:
            problems.append(problem)
    return EventList(tuple(notices), tuple(problems)), None
