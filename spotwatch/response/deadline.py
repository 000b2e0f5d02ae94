"""The one deadline rule: from a notice and the config to the clock its whole response uses.

Every part that needs a deadline reads it from the response's `NoticeClock`: the steps, the
hook environment, the state file, events, `status`, the rehearsal's timeline and the sleep
hook. None computes its own, so they cannot disagree.

| action                                      | deadline                                      |
|---------------------------------------------|-----------------------------------------------|
| terminate, stop, reboot, maintenance        | notice time - `deadline_margin`                |
| hibernate                                   | `hibernate.budget` from the start (no warning) |
| rebalance, resume, start, cancel            | none of their own: each step gets its own time |
|                                             | (a hook its timeout, an AWS step 60 s) from    |
|                                             | its start; the response as a whole, the sum of |
|                                             | its stages' longest (response/plan.py)         |

Signals whose end is not a moment IMDS names express it as their notice time, so the rule
above still holds: an Auto Scaling termination's notice time is when it was first seen plus
`autoscaling.budget`; a scheduled event's is its NotBefore.

The deadline lives on the monotonic clock (the wall clock is read only to place the notice
time on it) and follows the notice when its time moves.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Dict, Optional, Sequence

from spotwatch.config.schema import Config, HookSpec
from spotwatch.detection.notices import Notice

# A hook cut at its limit gets SIGTERM, then SIGKILL this long after.
KILL_GRACE = 5.0

# Actions whose notice names no moment to be done by: their hooks each get their own timeout.
NO_DEADLINE_OF_THEIR_OWN = frozenset({"rebalance", "resume", "start", "cancel"})


def deadline_clock(
    notice: Notice,
    config: Config,
    *,
    budget: Optional[float] = None,
    clock: Callable[[], float] = time.monotonic,
    wall: Callable[[], float] = time.time,
) -> NoticeClock:
    """The clock of the response to `notice` (see the table above). `budget`: for actions
    with no deadline of their own, what the whole plan may take (`Plan.own_budget`; by
    default, what its hooks may take)."""
    if notice.action == "hibernate":
        return NoticeClock.budget(notice, config.hibernate.budget, clock=clock, wall=wall)
    if notice.action in NO_DEADLINE_OF_THEIR_OWN:
        if budget is None:
            budget = hooks_budget(config.hooks_for(notice.action))
        return NoticeClock.budget(notice, budget, clock=clock, wall=wall, per_hook=True)
    return NoticeClock(notice, config.deadline_margin, clock=clock, wall=wall)


def hooks_budget(hooks: Sequence[HookSpec]) -> float:
    """How long hooks run by `order` can take at most: per stage, its longest timeout and
    the kill grace a hook cut at its timeout gets."""
    stages: Dict[int, float] = {}
    for hook in hooks:
        stages[hook.order] = max(stages.get(hook.order, 0.0), hook.timeout)
    return sum(stages.values()) + KILL_GRACE * len(stages)


class NoticeClock:
    """The live deadline of the notice being handled."""

    def __init__(
        self,
        notice: Notice,
        margin: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.margin = margin
        self._clock = clock
        self._wall = wall
        self._lock = threading.Lock()
        self.moved = threading.Event()  # set on every move; waiters re-read the deadline
        self.notice = notice
        self._deadline = self._to_monotonic(notice.epoch - margin)
        self._fixed_epoch: Optional[float] = None
        # True for actions with no deadline of their own: each step runs on a clock of its
        # own (`for_step`): a hook's deadline is its start plus its timeout
        # (SPOTWATCH_DEADLINE, SPOTWATCH_SECONDS_LEFT), an AWS step's its start plus 60 s.
        self.per_hook = False

    @classmethod
    def budget(
        cls,
        notice: Notice,
        seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        per_hook: bool = False,
    ) -> NoticeClock:
        """A deadline `seconds` from now, whatever the notice time says. For signals whose
        time is no deadline: hibernate (it starts now; `hibernate.budget` bounds the
        hooks) and rebalance (its noticeTime is when EC2 said it, already past)."""
        made = cls(notice, 0.0, clock=clock, wall=wall)
        made.per_hook = per_hook
        made._deadline = made._clock() + seconds
        made._fixed_epoch = made._wall() + seconds
        return made

    def for_step(self, seconds: float) -> NoticeClock:
        """The clock one step of a response with no deadline of its own runs on: `seconds`
        from now, whatever the steps before it took or left."""
        return NoticeClock.budget(
            self.notice, seconds, clock=self._clock, wall=self._wall, per_hook=True
        )

    def _to_monotonic(self, wall_moment: float) -> float:
        return self._clock() + (wall_moment - self._wall())

    def update(self, notice: Notice) -> None:
        """The notice's time moved: every remaining step's budget follows it."""
        with self._lock:
            self.notice = notice
            if self._fixed_epoch is None:
                self._deadline = self._to_monotonic(notice.epoch - self.margin)
        self.moved.set()

    @property
    def deadline(self) -> float:
        """The deadline on the monotonic clock."""
        with self._lock:
            return self._deadline

    @property
    def deadline_epoch(self) -> float:
        """The deadline as Unix seconds, for SPOTWATCH_DEADLINE and status."""
        with self._lock:
            if self._fixed_epoch is not None:
                return self._fixed_epoch
            return self.notice.epoch - self.margin

    def time_left(self) -> float:
        return self.deadline - self._clock()

    def monotonic_at(self, seconds_before_notice: float) -> float:
        """The monotonic moment `seconds_before_notice` before the notice time."""
        with self._lock:
            return self._deadline + self.margin - seconds_before_notice

    def now(self) -> float:
        return self._clock()
