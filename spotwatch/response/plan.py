"""A response plan: what to do about one notice, and in which order.

A plan is a prelude (steps started at once, beside everything else, that the stages wait
for only so long: the ECS drain, load balancer deregistration), ordered stages (steps of
one stage run in parallel: hooks by order, ECS stop), timed steps that start at a moment of
their own (ECS's final stop), and a finale that runs once everything else is done (ending
the instance). The deadline every step works against is the response's `NoticeClock`
(response/deadline.py).
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Tuple

from spotwatch.detection.notices import Notice
from spotwatch.response.deadline import NoticeClock
from spotwatch.state.schema import StepStatus

# What a step that is not a hook gets when its response has no deadline of its own (start,
# cancel, resume, rebalance): its own time, never a share reckoned from hooks (CONTRACT §7).
OWN_STEP_BUDGET = 60.0


@dataclass(frozen=True)
class StepOutcome:
    status: StepStatus  # one of state.schema.FINISHED
    detail: str = ""


def always() -> bool:
    return True


@dataclass
class StepContext:
    clock: NoticeClock
    instance_id: str
    dry_run: bool
    # Set when the response must start nothing new (shutdown, a changed action, a withdrawn
    # notice); steps already running finish.
    cancel: threading.Event = field(default_factory=threading.Event)
    # Set when what still runs must end now (the shutdown's grace is over): hooks get
    # SIGTERM, then SIGKILL, as at their own time limit.
    abort: threading.Event = field(default_factory=threading.Event)
    # Whether the notice still shows (a recent poll saw it): nothing irreversible, such as
    # ending the instance, is done on a notice that cannot be confirmed.
    confirmed: Callable[[], bool] = always
    # The response's key (its record in the state file): parts that keep records of their
    # own key them by it ("": a response with no record, such as the sleep hook's).
    response: str = ""
    cloud: str = ""  # SPOTWATCH_CLOUD: the cloud the daemon runs on (clouds/registry.py)

    @property
    def notice(self) -> Notice:
        return self.clock.notice


class Step(ABC):
    """One unit of the response, recorded in the state file under its unique `name`."""

    kind = "step"
    # How long it may take when its response has no deadline of its own: the runner then
    # gives it a clock of its own, this long from its start (NoticeClock.for_step).
    budget = OWN_STEP_BUDGET
    # Whether the response's record lists it from the start; one that `needed` may leave out
    # is recorded only once it runs.
    listed = True

    def __init__(self, name: str) -> None:
        self.name = name

    def needed(self, ctx: StepContext) -> bool:
        """Whether the step is still to run; it may wait until that is known. False: it is
        left out, unrecorded (a step another response of the same end runs: response/ends.py)."""
        return True

    @abstractmethod
    def run(self, ctx: StepContext) -> StepOutcome:
        """Do the work; never raise for a foreseeable failure (return FAILED with why)."""


@dataclass
class TimedStep:
    step: Step
    # The monotonic moment to start at, asked again whenever the notice time moves.
    start_at: Callable[[NoticeClock], float]


@dataclass
class PreludeStep:
    step: Step
    # The stages wait for this step at most this many seconds from the response's start
    # (and never past the deadline); it runs on regardless.
    hold: float


@dataclass
class Plan:
    notice: Notice
    prelude: List[PreludeStep] = field(default_factory=list)
    stages: List[Tuple[Step, ...]] = field(default_factory=list)
    timed: List[TimedStep] = field(default_factory=list)
    finale: List[Tuple[Step, ...]] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)

    def all_steps(self) -> List[Step]:
        ordered = [p.step for p in self.prelude]
        ordered += [s for stage in self.stages for s in stage]
        ordered += [t.step for t in self.timed]
        ordered += [s for stage in self.finale for s in stage]
        return ordered

    def own_budget(self) -> float:
        """What the plan may take when its response has no deadline of its own: stage after
        stage, each as long as its longest step's budget."""
        return sum(max(s.budget for s in stage) for stage in self.stages + self.finale if stage)

    def find(self, name: str) -> Optional[Step]:
        return next((s for s in self.all_steps() if s.name == name), None)
