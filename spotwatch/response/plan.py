"""A response plan: what to do about one notice, in which order, against which deadline.

The deadline is notice time - `deadline_margin`. It is kept on the monotonic clock (wall
time is read only to compare with the notice time) and follows the notice when its time
moves. A plan is ordered stages (steps of one stage run in parallel), timed steps that
start at a moment of their own (ECS's final stop), and a finale that runs once everything
else is done (ending the instance).
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Tuple

from spotwatch.detection.notices import Notice

# Statuses a step can have in the state file and in `spotwatch status`.
PENDING, RUNNING, OK, FAILED, TIMEOUT, SKIPPED, INTERRUPTED = (
    "pending",
    "running",
    "ok",
    "failed",
    "timeout",
    "skipped",
    "interrupted",
)
FINISHED = frozenset({OK, FAILED, TIMEOUT, SKIPPED})


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

    @classmethod
    def budget(
        cls,
        notice: Notice,
        seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> NoticeClock:
        """A deadline `seconds` from now, whatever the notice time says. For signals whose
        time is no deadline: hibernate (it starts now; `hibernate.budget` bounds the
        hooks) and rebalance (its noticeTime is when EC2 said it, already past)."""
        made = cls(notice, 0.0, clock=clock, wall=wall)
        made._deadline = made._clock() + seconds
        made._fixed_epoch = made._wall() + seconds
        return made

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


@dataclass(frozen=True)
class StepOutcome:
    status: str  # one of FINISHED
    detail: str = ""


@dataclass
class StepContext:
    clock: NoticeClock
    instance_id: str
    dry_run: bool
    # Set when the daemon is shutting down: start nothing new, let what runs finish.
    cancel: threading.Event = field(default_factory=threading.Event)

    @property
    def notice(self) -> Notice:
        return self.clock.notice


class Step(ABC):
    """One unit of the response, recorded in the state file under its unique `name`."""

    kind = "step"

    def __init__(self, name: str) -> None:
        self.name = name

    @abstractmethod
    def run(self, ctx: StepContext) -> StepOutcome:
        """Do the work; never raise for a foreseeable failure (return FAILED with why)."""


@dataclass
class TimedStep:
    step: Step
    # The monotonic moment to start at, asked again whenever the notice time moves.
    start_at: Callable[[NoticeClock], float]


@dataclass
class Plan:
    notice: Notice
    stages: List[Tuple[Step, ...]] = field(default_factory=list)
    timed: List[TimedStep] = field(default_factory=list)
    finale: List[Tuple[Step, ...]] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)

    def all_steps(self) -> List[Step]:
        ordered = [s for stage in self.stages for s in stage]
        ordered += [t.step for t in self.timed]
        ordered += [s for stage in self.finale for s in stage]
        return ordered

    def find(self, name: str) -> Optional[Step]:
        return next((s for s in self.all_steps() if s.name == name), None)
