"""De-duplication of notices across polls, as a small pure state machine.

A notice is handled once. It stays the same notice while it keeps appearing, even if its
`time` moves (the deadline follows the newest time). It becomes a new notice only after it
was absent for 3 consecutive successful polls, after a resume from hibernation (`rearm`),
or when its action changes. Failed polls neither count as absence nor break a run of it:
an IMDS outage says nothing about the notice.

The tracker's whole memory is `to_json()`, which the daemon stores so that a restarted
daemon does not handle the same notice again. Each new notice bumps its `generation`, which
names the notice's response record (`response_key`): a notice that comes back, or whose
action changes, gets a record of its own.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import AbstractSet, Any, Dict, Optional

from spotwatch.detection.notices import Notice

ABSENT_POLLS_TO_FORGET = 3


class Change(enum.Enum):
    NONE = "none"  # nothing there, nothing known
    NEW = "new"  # a notice to respond to
    SAME = "same"  # the known notice, unchanged
    MOVED = "moved"  # the known notice with a new time: the deadline follows it
    ABSENT = "absent"  # the known notice missing, not yet for long enough to forget it
    FORGOTTEN = "forgotten"  # the known notice gone for good; the next one is new


@dataclass(frozen=True)
class Observation:
    change: Change
    notice: Optional[Notice]  # the notice now known (None once forgotten)
    previous: Optional[Notice] = None  # for NEW replacing another action, and FORGOTTEN


class NoticeTracker:
    def __init__(self) -> None:
        self.known: Optional[Notice] = None
        self.absent_polls = 0
        self.generation = 0  # how many notices this tracker has taken for new

    def observe(
        self, seen: Optional[Notice], speaks_for: Optional[AbstractSet[str]] = None
    ) -> Observation:
        """Feed one successful poll's answer (None: no notice there).

        `speaks_for`: the actions whose absence that answer can vouch for (None: all). The
        termination-time fallback only knows terminate notices, so its "none" leaves a known
        stop or hibernate notice as it was, neither seen nor absent.
        """
        known = self.known
        if seen is None:
            if known is None:
                return Observation(Change.NONE, None)
            if speaks_for is not None and known.action not in speaks_for:
                return Observation(Change.SAME, known)  # nothing learned about it
            self.absent_polls += 1
            if self.absent_polls >= ABSENT_POLLS_TO_FORGET:
                self.known, self.absent_polls = None, 0
                return Observation(Change.FORGOTTEN, None, previous=known)
            return Observation(Change.ABSENT, known)
        self.absent_polls = 0
        if known is None or known.action != seen.action:
            self.known = seen
            self.generation += 1
            return Observation(Change.NEW, seen, previous=known)
        if seen.time != known.time:
            self.known = seen
            return Observation(Change.MOVED, seen, previous=known)
        return Observation(Change.SAME, known)

    def rearm(self) -> Optional[Notice]:
        """Forget the known notice (after a resume): if it shows again it is new."""
        known, self.known, self.absent_polls = self.known, None, 0
        return known

    def response_key(self, name: str) -> str:
        """The state file's key for the response to the known notice of tracker `name`.
        (Generation 0: a state file written before generations were counted.)"""
        return name if self.generation <= 0 else f"{name}#{self.generation}"

    def to_json(self) -> Dict[str, Any]:
        return {
            "known": self.known.to_json() if self.known else None,
            "absent_polls": self.absent_polls,
            "generation": self.generation,
        }

    @classmethod
    def from_json(cls, data: Any) -> NoticeTracker:
        """Rebuild from stored state; anything malformed yields a fresh tracker."""
        tracker = cls()
        if not isinstance(data, dict):
            return tracker
        try:
            known = data.get("known")
            tracker.known = Notice.from_json(known) if known else None
            tracker.absent_polls = max(0, int(data.get("absent_polls", 0)))
            tracker.generation = max(0, int(data.get("generation", 0)))
        except (KeyError, TypeError, ValueError, OverflowError):  # int(inf): OverflowError
            return cls()
        return tracker
