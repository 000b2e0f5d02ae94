"""Azure's Scheduled Events document, as notices.

`GET metadata/scheduledevents?api-version=2020-07-01` answers
`{"DocumentIncarnation": N, "Events": [...]}`; each event has `EventId`, `EventType` (`Preempt`,
`Terminate`, `Redeploy`, `Reboot`, `Freeze`), `ResourceType`, `Resources` (the VM names it
concerns: a scale set's placement group shares one list), `EventStatus` (`Scheduled`, then
`Started` once approved or once NotBefore passed; there is no `Completed`: a finished or
canceled event leaves the list), `NotBefore` (`Mon, 19 Sep 2016 18:29:47 GMT`, blank once
started), `Description`, `EventSource`, `DurationInSeconds`. An event that cannot be read is
ignored (the monitor logs it once).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Dict, List, Optional, Tuple

from spotwatch.detection.notices import Action, Source, parse_http_time

SOURCE = Source("azure-scheduled-event")
# What each EventType asks of the VM.
EVENT_ACTIONS: Dict[str, Action] = {
    "Preempt": "terminate",
    "Terminate": "terminate",
    "Redeploy": "stop",
    "Reboot": "reboot",
    "Freeze": "maintenance",
}
STATUSES = ("Scheduled", "Started")
MAX_EVENTS = 100


@dataclass(frozen=True)
class AzureEvent:
    event_id: str
    event_type: str
    action: Action
    started: bool  # EventStatus Started
    not_before: Optional[datetime]  # None once started (NotBefore blank)
    resources: Tuple[str, ...]

    def concerns(self, vm_name: str) -> bool:
        """Whether this VM is among `Resources` (Azure's names ignore case)."""
        return vm_name.casefold() in (r.casefold() for r in self.resources)


@dataclass(frozen=True)
class Document:
    incarnation: Optional[int]
    events: Tuple[AzureEvent, ...]
    problems: Tuple[str, ...]  # one line per event that could not be read


def parse_event(event: object) -> Tuple[Optional[AzureEvent], Optional[str]]:
    if not isinstance(event, dict):
        return None, "an event is not a JSON object"
    event_id, kind, status = event.get("EventId"), event.get("EventType"), event.get("EventStatus")
    if not isinstance(event_id, str) or not event_id or len(event_id) > 64:
        return None, "an event has no usable EventId"
    action = EVENT_ACTIONS.get(kind) if isinstance(kind, str) else None
    if action is None or not isinstance(kind, str):
        return None, f"event {event_id}: unknown EventType {str(kind)[:40]!r}"
    if status not in STATUSES:
        return None, f"event {event_id}: unknown EventStatus {str(status)[:20]!r}"
    resources = event.get("Resources")
    if not isinstance(resources, list) or not all(isinstance(r, str) for r in resources):
        return None, f"event {event_id}: Resources is not a list of names"
    text = event.get("NotBefore")
    not_before = parse_http_time(text, weekday=True)
    if not_before is None and not (status == "Started" and not text):
        shown = str(text)[:40]
        return (
            None,
            f"event {event_id}: NotBefore {shown!r} is not like 'Mon, 19 Sep 2016 18:29:47 GMT'",
        )
    started = status == "Started"
    return AzureEvent(event_id, kind, action, started, not_before, tuple(resources[:1000])), None


def parse_document(body: bytes) -> Tuple[Optional[Document], Optional[str]]:
    """The whole answer (a 200): the events, or why the body is unusable."""
    try:
        value = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None, "scheduled events body is not JSON"
    if not isinstance(value, dict) or not isinstance(value.get("Events"), list):
        return None, "scheduled events body has no Events list"
    incarnation = value.get("DocumentIncarnation")
    events: List[AzureEvent] = []
    problems: List[str] = []
    for raw in value["Events"][:MAX_EVENTS]:
        event, problem = parse_event(raw)
        if event is not None:
            events.append(event)
        if problem is not None:
            problems.append(problem)
    number = incarnation if isinstance(incarnation, int) else None
    return Document(number, tuple(events), tuple(problems)), None
