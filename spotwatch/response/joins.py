"""The responder's side of one end, one response (response/ends.py): which response a new
one joins, what the joined one sees of it, and which deadline governs them.

Joins are recorded in the state file (`joins`: joined response -> the one it joined), so a
restart keeps them in their order: a joined response that resumes before the one it joined
still waits for it (its record says whether it ended), whatever order the trackers resume in.

What a joined response sees of the first (`FirstView`) comes from the first's runner while
it runs, else from its record: both say the same, so nothing depends on which is asked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import AbstractSet, Any, Callable, Dict, List, Optional, Protocol, Sequence

from spotwatch.detection.notices import SOURCE_TARGET_LIFECYCLE_STATE, Notice
from spotwatch.response.ends import earlier, same_end
from spotwatch.response.plan import Plan, StepContext
from spotwatch.state.history import step_status
from spotwatch.state.schema import FAILED, INTERRUPTED, OK, RUNNING, SKIPPED, TIMEOUT
from spotwatch.state.store import StateStore

JOINS = "joins"  # the state file's entry: joined response key -> first response key
RAN = frozenset({OK, FAILED, TIMEOUT})


class Running(Protocol):
    """What the joins read of a running response (responder.Response)."""

    key: str
    tracker: str
    plan: Plan
    ctx: StepContext
    unfinished: str  # what its unstarted steps become once halted (`interrupted`: a shutdown)

    def progress(self, step: str) -> Optional[str]: ...


@dataclass(frozen=True)
class Joined:
    """The response a new one joins: its key, its own notice and its plan's step names."""

    key: str
    notice: Notice
    steps: AbstractSet[str]


class FirstView:
    """The response `key` joined (ends.FirstResponse), live or from its record."""

    def __init__(
        self, key: str, store: StateStore, running: Callable[[str], Optional[Running]]
    ) -> None:
        self.key = key
        self._store = store
        self._running = running

    def ended(self) -> bool:
        if self._running(self.key) is not None:
            return False
        record = self._store.response(self.key)
        return record is None or bool(record.get("done"))

    def halted(self) -> bool:
        return halted(self._running(self.key), self._store.response(self.key) or {})

    def finished(self, step: str) -> Optional[bool]:
        live = self._running(self.key)
        if live is not None:
            for_good = halted(live, {})  # first: once halted, nothing unstarted starts
            status = live.progress(step)
            if status == RUNNING:
                return None
            if status is not None:
                return True
            return False if for_good else None
        record = self._store.response(self.key)
        if record is None:
            return True  # nothing to go by: never run a step twice on a guess
        status = step_status(record, step)
        for_good = halted(None, record)
        if status in RAN or (status == SKIPPED and not for_good):
            return True
        if record.get("done"):
            return not for_good
        return None  # interrupted by a shutdown: it resumes, or is ended (then halted)


def halted(live: Optional[Running], record: Dict[str, Any]) -> bool:
    """Told to start no further step before its plan was done (canceled, superseded): it
    ended nothing it did not finish. One interrupted by a shutdown is taken up again after
    the restart: not halted."""
    if live is not None:  # cancel first: `unfinished` is set before it
        return live.ctx.cancel.is_set() and live.unfinished != INTERRUPTED
    return bool(record.get("done") and record.get("why_ended"))


def _notice(record: Optional[Dict[str, Any]]) -> Optional[Notice]:
    try:
        return Notice.from_json(record["notice"]) if record else None
    except (KeyError, TypeError, ValueError):
        return None


class Joins:
    """The recorded joins, and the rule of which response a new notice joins."""

    def __init__(self, store: StateStore, running: Callable[[], Sequence[Running]]) -> None:
        self.store = store
        self._running = running

    def _live(self, key: str) -> Optional[Running]:
        return next((r for r in self._running() if r.key == key), None)

    def view(self, key: str) -> FirstView:
        return FirstView(key, self.store, self._live)

    def recorded(self) -> Dict[str, str]:
        return dict(self.store.value(JOINS) or {})

    def find(self, key: str, tracker: str, notice: Notice) -> Optional[Joined]:
        """The response `key` joins, and record the join: as recorded before a restart,
        else the newest response of the same end on this boot, of another tracker, that was
        never halted (running, ended, or to be taken up after a restart)."""
        joins = self.recorded()
        first_key = joins.get(key)
        if first_key is None:
            first_key = self._first_of_same_end(key, tracker, notice, joins)
        if first_key is None:
            return None
        live = self._live(first_key)
        record = self.store.response(first_key)
        own = _notice(record)
        if own is None:
            return None
        if live is not None:
            names = {step.name for step in live.plan.all_steps()}
        else:
            names = {str(step.get("name")) for step in (record or {}).get("steps", [])}
        joins[key] = first_key
        self.store.set_value(JOINS, joins)
        return Joined(first_key, own, names)

    def _first_of_same_end(
        self, key: str, tracker: str, notice: Notice, joins: Dict[str, str]
    ) -> Optional[str]:
        return self._newest_of_same_end(
            tracker, notice, lambda name, record: name != key and name not in joins
        )

    def ended_of_same_end(self, tracker: str, notice: Notice) -> Optional[str]:
        """The newest response of `notice`'s end on this boot, of another tracker, that ran
        its course (ended, never halted): a shutdown announced after it has nothing to do."""
        return self._newest_of_same_end(
            tracker, notice, lambda name, record: bool(record.get("done"))
        )

    def _newest_of_same_end(
        self, tracker: str, notice: Notice, keep: Callable[[str, Dict[str, Any]], bool]
    ) -> Optional[str]:
        """The newest response record (by first seen) of another tracker, of `notice`'s end,
        never halted, that `keep` accepts."""
        records = dict(self.store.value("responses") or {})  # a copy: others write it
        candidates = []
        for name, record in records.items():
            known = _notice(record)
            if (
                known is None
                or record.get("tracker") == tracker
                or not same_end(known, notice)
                or halted(self._live(str(name)), record)
                or not keep(str(name), record)
            ):
                continue
            candidates.append((str(record.get("first_seen") or ""), str(name)))
        return max(candidates)[1] if candidates else None

    def group_terminating(self) -> bool:
        """Has a response on this boot answered the Auto Scaling group's own termination of
        the instance? Then no other end's response detaches it (response/ends.py)."""
        records = dict(self.store.value("responses") or {})  # a copy: others write it
        return any(
            known is not None and known.signal == SOURCE_TARGET_LIFECYCLE_STATE
            for known in map(_notice, records.values())
        )

    def members(self, key: str) -> List[str]:
        """The responses of `key`'s end: the first and every one joined to it."""
        joins = self.recorded()
        first = joins.get(key, key)
        return [first, *(joined for joined, to in joins.items() if to == first)]

    def governing(self, key: str, own: Notice) -> Notice:
        """`own` (the notice of `key`) with the earliest time among its end's notices: the
        earlier deadline governs them all."""
        timing = own
        for member in self.members(key):
            if member != key:
                other = _notice(self.store.response(member))
                if other is not None and other.action == own.action:
                    timing = earlier(timing, other)
        return timing
