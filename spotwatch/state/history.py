"""What earlier responses did, read from the state document: for the `start` hooks of a new
boot and for what a canceled scheduled event must put back.

A new boot's state file keeps the earlier boot's records under `previous` (state/store.py).
The instance went away on that boot when spotwatch handled a `stop` or `reboot` there (a Spot
notice or a scheduled event), a `shutdown` (CONTRACT §8: it counts like a stop) or a
`hibernate`: a resumed hibernation keeps its boot, so a hibernate record on an earlier boot
is one that was not resumed. A response that was canceled (its scheduled event, or the
shutdown, called off) ended nothing.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, Mapping, Optional

ENDS_THE_BOOT = frozenset({"stop", "reboot", "hibernate", "shutdown"})
CANCELED = "canceled"  # how the record of a canceled response's `why_ended` begins
DRAIN_STEP = "ecs:drain"


def was_canceled(record: Mapping[str, Any]) -> bool:
    return str(record.get("why_ended") or "").startswith(CANCELED)


def drained(record: Mapping[str, Any]) -> bool:
    """Whether this response set the container instance to DRAINING."""
    steps = record.get("steps")
    return isinstance(steps, list) and any(
        isinstance(s, dict) and s.get("name") == DRAIN_STEP and s.get("status") == "ok"
        for s in steps
    )


def _records(responses: object) -> Iterable[Dict[str, Any]]:
    if isinstance(responses, dict):
        for record in responses.values():
            if isinstance(record, dict) and isinstance(record.get("notice"), dict):
                yield record


def boot_ending_record(
    previous: object, boot_id: str, instance_id: Optional[str]
) -> Optional[Dict[str, Any]]:
    """The latest record of an earlier boot of this instance that ended that boot, or None.
    `previous` is the state document's `previous` entry."""
    if not isinstance(previous, dict) or previous.get("boot_id") in (None, boot_id):
        return None
    known = previous.get("instance_id")
    if instance_id and known and known != instance_id:
        return None  # another instance's file (a baked image): not this instance's history
    found = [
        r
        for r in _records(previous.get("responses"))
        if r["notice"].get("action") in ENDS_THE_BOOT and not was_canceled(r)
    ]
    return max(found, key=lambda r: str(r.get("first_seen") or ""), default=None)


def drained_for_event(responses: object, event_id: Optional[str], action: Optional[str]) -> bool:
    """Whether the response to this scheduled event (with this action) drained ECS."""
    return event_id is not None and any(
        r["notice"].get("event_id") == event_id
        and r["notice"].get("action") == action
        and drained(r)
        for r in _records(responses)
    )
