"""What a `cancel` or a `start` puts back: what the responses it undoes did to the instance's
place in the fleet (ECS DRAINING, load balancer targets taken out). Each part that changes
it reads here which responses those are and how their steps ended (`Providers.undo`:
parts/ecs/reactivate.py, parts/lb/steps.py).

- `cancel` (a scheduled event called off): the event's own response. Nothing is put back
  while another signal of the same end that joined it still stands (a Spot stop that joined
  a canceled scheduled stop still stops the instance: response/ends.py).
- `start` (the first start of a new boot): the earlier boot's responses that ended it
  (`stop`, `reboot`, an unresumed `hibernate`; not canceled ones).

A canceled response may still be running its last steps when the cancel's steps run (a
drain call in flight): `settled` waits, within the step's own time, until the step it asks
about has ended, so the decision is made on what was done, not on what was planned.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from spotwatch.detection.notices import Notice
from spotwatch.response.joins import JOINS, halted
from spotwatch.response.plan import StepContext
from spotwatch.state.history import ended_the_boot, step_status
from spotwatch.state.schema import FINISHED
from spotwatch.state.store import StateStore

SETTLE_SLICE = 0.2  # how often a put-back step looks again at a step still running
Records = Dict[str, Dict[str, Any]]


class PutBack:
    """The responses a put-back notice undoes, read from the state store once it is bound."""

    def __init__(self) -> None:
        self.store: Optional[StateStore] = None

    def bind(self, daemon: object) -> None:
        """A `DaemonParts.on_start` callback: the daemon's store is loaded by then."""
        store = getattr(daemon, "store", None)
        self.store = store if isinstance(store, StateStore) else None

    def undone(self, notice: Notice) -> Records:
        """The records of the responses `notice` (a cancel or a start) undoes, by key."""
        store = self.store
        if store is None:
            return {}
        if notice.action == "cancel":
            return self._canceled(store, notice)
        if notice.action == "start":
            previous, instance_id = store.value("previous"), store.value("instance_id")
            return ended_the_boot(previous, store.boot_id, instance_id)
        return {}

    @staticmethod
    def _canceled(store: StateStore, notice: Notice) -> Records:
        responses: Records = dict(store.value("responses") or {})  # a copy: others write it
        found = {
            key: record
            for key, record in responses.items()
            if (record.get("notice") or {}).get("event_id") == notice.event_id
            and (record.get("notice") or {}).get("action") == notice.canceled_action
            and notice.event_id is not None
        }
        joins: Dict[str, str] = store.value(JOINS) or {}
        for joined, first in joins.items():
            if first in found and not halted(None, responses.get(joined) or {}):
                return {}  # the same end still stands: nothing to put back
        return found

    def settled(self, notice: Notice, key: str, step: str, ctx: StepContext) -> Optional[str]:
        """How `step` of the undone response `key` ended, once it has (waiting, within the
        asking step's time, while a canceled response still runs it); None: no such step."""
        while True:
            record = self.undone(notice).get(key) or {}
            status = step_status(record, step)
            if status is None or status in FINISHED or record.get("done"):
                return status
            left = ctx.clock.time_left()
            if notice.action != "cancel" or left <= 0:
                return status
            if ctx.cancel.wait(min(SETTLE_SLICE, left)):
                return status

    def planned(self, notice: Notice, step: str) -> Records:
        """The undone responses whose plan had `step` (done or not yet: `settled` tells)."""
        return {k: r for k, r in self.undone(notice).items() if step_status(r, step) is not None}

