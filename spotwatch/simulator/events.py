"""Scheduled events as IMDS lists them at `meta-data/events/maintenance/scheduled`.

A JSON list of events (`Code`, `Description`, `EventId`, `NotBefore`, `NotAfter`, `State`),
`[]` when there are none; times written like `21 Jan 2019 09:00:43 GMT`. Standard library
only, like the rest of the simulator.
"""

import itertools
import json
import threading
from datetime import datetime, timedelta, timezone
from typing import Dict, List, Optional

SCHEDULED_PATH = "/latest/meta-data/events/maintenance/scheduled"
# How long each kind of event lasts (NotAfter - NotBefore), roughly as EC2 announces them.
WINDOW = timedelta(hours=2)
DESCRIPTIONS = {
    "instance-stop": "The instance is running on degraded hardware",
    "instance-retirement": "The instance is scheduled for retirement",
    "instance-reboot": "scheduled reboot",
    "system-reboot": "scheduled reboot",
    "system-maintenance": "scheduled maintenance",
}
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def event_time(moment: datetime) -> str:
    """IMDS's scheduled-event time (English month names whatever the locale)."""
    moment = moment.astimezone(timezone.utc)
    month = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"][
        moment.month - 1
    ]
    return f"{moment.day:02d} {month} {moment:%Y %H:%M:%S} GMT"


class ScheduledEvents:
    """The events listed now, by EventId, in the order they were added; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: Dict[str, Dict[str, str]] = {}
        self._ids = itertools.count(1)

    def add(
        self,
        code: str,
        not_before: datetime,
        *,
        event_id: Optional[str] = None,
        state: str = "active",
    ) -> str:
        """List an event; returns its EventId."""
        with self._lock:
            event_id = event_id or f"instance-event-{next(self._ids):017x}"
            self._events[event_id] = {
                "Code": code,
                "Description": DESCRIPTIONS.get(code, code),
                "EventId": event_id,
                "NotAfter": event_time(not_before + WINDOW),
                "NotBefore": event_time(not_before),
                "State": state,
            }
        return event_id

    def set_state(self, event_id: str, state: str) -> None:
        with self._lock:
            self._events[event_id]["State"] = state

    def move(self, event_id: str, not_before: datetime) -> None:
        with self._lock:
            self._events[event_id]["NotBefore"] = event_time(not_before)
            self._events[event_id]["NotAfter"] = event_time(not_before + WINDOW)

    def set_field(self, event_id: str, name: str, value: str) -> None:
        """Any field as given (a malformed time, an unknown code)."""
        with self._lock:
            self._events[event_id][name] = value

    def remove(self, event_id: str) -> None:
        with self._lock:
            self._events.pop(event_id, None)

    def listed(self) -> List[Dict[str, str]]:
        with self._lock:
            return [dict(e) for e in self._events.values()]

    def body(self) -> bytes:
        return json.dumps(self.listed(), indent=2).encode()
