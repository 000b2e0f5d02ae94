"""The event JSON of CONTRACT §6, built one way for every sink (webhook, SNS, EventBridge:
spotwatch.telemetry) and for the `http` preset.

An event is about one response: its notice, the deadline its clock keeps and the instance;
`fields` add what the kind of event carries (`step`, `result`, `detail`, ...). The sinks
number their events (`sequence`) when they queue them.
"""

from __future__ import annotations

import time
from typing import Any, Dict, Mapping, Optional

from spotwatch.detection.notices import Notice
from spotwatch.state.files import iso

# What the first event of a response carries besides the notice.
OPENING_FIELDS: Mapping[str, Any] = {"step": None, "result": None, "detail": ""}


def opening_kind(notice: Notice) -> str:
    """The first event's kind: a scheduled event called off is an event of its own kind
    (the instance stays)."""
    return "cancel" if notice.action == "cancel" else "notice"


def event_json(
    kind: str,
    notice: Notice,
    deadline_epoch: float,
    instance_id: Optional[str],
    fields: Mapping[str, Any],
) -> Dict[str, Any]:
    event: Dict[str, Any] = {
        "event": kind,
        "instance_id": instance_id,
        "action": notice.action,
        "notice_time": notice.time_text,
        "deadline": iso(deadline_epoch),
        "source": notice.source,
        "time": iso(time.time()),
        **fields,
    }
    if notice.event_id is not None:
        event["event_id"] = notice.event_id
        event["event_code"] = notice.event_code
    if notice.canceled_action is not None:
        event["canceled_action"] = notice.canceled_action
    return event
