"""What earlier responses did, read from the state document: for the `start` response of a
new boot (response/putback.py says what it puts back).

A new boot's state file keeps the earlier boot's records under `previous` (state/store.py).
The instance went away on that boot when spotwatch handled a `stop` or `reboot` there (a Spot
notice or a scheduled event), a `shutdown` (CONTRACT §8: it counts like a stop) or a
`hibernate`: a resumed hibernation keeps its boot, so a hibernate record on an earlier boot
is one that was not resumed. A response that was canceled (its scheduled event, or the
shutdown, called off) ended nothing.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

ENDS_THE_BOOT = frozenset({"stop", "reboot", "hibernate", "shutdown"})
CANCELED = "canceled"  # how the record of a canceled response's `why_ended` begins


def step_status(record: Mapping[str, Any], step: str) -> Optional[str]:
    """`step`'s status in a response record (None: the record has no such step)."""
    steps = record.get("steps")
    for entry in steps if isinstance(steps, list) else ():
        if isinstance(entry, dict) and entry.get("name") == step:
            return str(entry.get("status"))
    return None


def was_canceled(record: Mapping[str, Any]) -> bool:
    return str(record.get("why_ended") or "").startswith(CANCELED)


def ended_the_boot(
    previous: object, boot_id: str, instance_id: Optional[str]
) -> Dict[str, Dict[str, Any]]:
    """The records, by key, of an earlier boot of this instance that ended that boot (not
    canceled ones). `previous` is the state document's `previous` entry."""
    if not isinstance(previous, dict) or previous.get("boot_id") in (None, boot_id):
        return {}
    known = previous.get("instance_id")
    if instance_id and known and known != instance_id:
        return {}  # another instance's file (a baked image): not this instance's history
    responses = previous.get("responses")
    return {
        str(key): record
        for key, record in (responses.items() if isinstance(responses, dict) else ())
        if isinstance(record, dict)
        and isinstance(record.get("notice"), dict)
        and record["notice"].get("action") in ENDS_THE_BOOT
        and not was_canceled(record)
    }


def boot_ending_record(
    previous: object, boot_id: str, instance_id: Optional[str]
) -> Optional[Dict[str, Any]]:
    """The latest record of an earlier boot of this instance that ended that boot, or None."""
    found = ended_the_boot(previous, boot_id, instance_id).values()
    return max(found, key=lambda r: str(r.get("first_seen") or ""), default=None)
