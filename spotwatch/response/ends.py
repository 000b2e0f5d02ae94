"""One end, one response: signals that mean the same end of the instance share a response.

A Spot `terminate` and an Auto Scaling `Terminated`, a Spot `stop` and a scheduled
`instance-stop`, a system shutdown and any response that ends the instance: different
signals, one end. Whichever comes second joins the response of the first: the steps of its
plan that the first has too are left to the first (`SharedStep`: run only when the first will
not run them), its own steps (the lifecycle action, the instance action) wait for the first
response to end (`JoinStep`); the earlier deadline governs both. No hook runs twice for one
end. A first response that has already ended on this boot is not waited for: the second runs
only its own steps.

A response halted before it finished (its scheduled event canceled, its action changed)
ended nothing it did not finish: a response joined to it goes on at once and runs every
step the first never started (its running steps finish there, and are not run twice). A
response that was halted is never joined afterwards: the next signal of the same end gets a
whole response of its own.

`same_end` is the rule; the responder (response/responder.py, with response/joins.py) applies
it to every notice, so a new signal of one of these actions joins without code of its own,
and the shutdown guard (daemon/shutdown.py) asks it whether a shutdown has a response to wait
for already.
"""

from __future__ import annotations

from dataclasses import replace
from typing import AbstractSet, Callable, List, Optional, Protocol, Tuple

from spotwatch.detection.notices import SHUTDOWN, SOURCE_TARGET_LIFECYCLE_STATE, Notice
from spotwatch.response.plan import Plan, PreludeStep, Step, StepContext, StepOutcome, TimedStep
from spotwatch.state.schema import INTERRUPTED, OK

# Actions after which the instance is gone (or down): two signals of one of them are one end.
ENDS = frozenset({"terminate", "stop"})
# A system shutdown (CONTRACT §8) is the end a response to any of these was for: announced
# while one runs, or after one ended on this boot, it is that end, and a signal of one of
# them that comes while the shutdown's own response runs is the shutdown.
INSTANCE_ENDS = frozenset({"terminate", "stop", "reboot", SHUTDOWN})
# Detaching the instance from its group (a replacement launched at once) makes no sense
# once the group itself is terminating it.
DETACH_STEP_PREFIXES = ("autoscaling:detach", "asg:detach")
JOIN_SLICE = 0.5


def same_end(first: Notice, second: Notice) -> bool:
    """Do two notices (of different trackers) announce the same end of the instance?"""
    if SHUTDOWN in (first.action, second.action):
        return first.action in INSTANCE_ENDS and second.action in INSTANCE_ENDS
    return first.action == second.action and first.action in ENDS


class FirstResponse(Protocol):
    """The response a joined one joined, as the joined one sees it (response/joins.py)."""

    key: str

    def ended(self) -> bool:
        """It has run its course (or its record is gone)."""

    def halted(self) -> bool:
        """It was told to start no further step before its plan was done."""

    def finished(self, step: str) -> Optional[bool]:
        """True: it ran `step` (or is done with it); False: it never will; None: not known
        yet (the step runs, or is still to come)."""


class JoinStep(Step):
    """Waits for the response this one joined, so its own steps come after that one's; goes
    on at once when that one is halted."""

    kind = "join"

    def __init__(self, first: FirstResponse) -> None:
        super().__init__(f"join:{first.key}")
        self.first = first

    def run(self, ctx: StepContext) -> StepOutcome:
        while not (self.first.ended() or self.first.halted()):
            if ctx.cancel.wait(JOIN_SLICE):  # not done: a restart waits again
                return StepOutcome(INTERRUPTED, f"stopped waiting for {self.first.key}")
        if self.first.halted():
            return StepOutcome(
                OK, f"{self.first.key} was halted: running what it did not finish"
            )
        return StepOutcome(OK, f"joined the response {self.first.key}")


class SharedStep(Step):
    """A step the joined response has in common with the first: left to the first, and run
    here only when the first will not run it (it was halted before starting it). Until that
    is known it waits; when it is not needed it is left out of the record altogether."""

    listed = False

    def __init__(self, step: Step, first: FirstResponse) -> None:
        super().__init__(step.name)
        self.step = step
        self.first = first
        self.kind = step.kind
        self.budget = step.budget

    def needed(self, ctx: StepContext) -> bool:
        while True:
            done = self.first.finished(self.name)
            if done is not None:
                return not done
            if ctx.cancel.wait(JOIN_SLICE):
                return False

    def run(self, ctx: StepContext) -> StepOutcome:
        return self.step.run(ctx)


def joined_plan(
    plan: Plan, first: FirstResponse, first_steps: AbstractSet[str], first_notice: Notice
) -> Plan:
    """`plan` joined to `first` (whose plan has `first_steps`, for `first_notice`): the steps
    the first has are `SharedStep`s; its own stage and finale steps come after a `JoinStep`;
    no detach when the group terminates the instance."""
    if SOURCE_TARGET_LIFECYCLE_STATE in (plan.notice.signal, first_notice.signal):
        plan = without_detach(plan)

    def shared(step: Step) -> Step:
        return SharedStep(step, first) if step.name in first_steps else step

    joined = _rebuilt(plan, shared)
    joined.stages.insert(0, (JoinStep(first),))
    return joined


def without_detach(plan: Plan) -> Plan:
    """`plan` with no detach step: the group is already terminating the instance (it is
    replacing it already, and AWS refuses DetachInstances in Terminating:Wait)."""
    return _rebuilt(plan, keep=lambda step: not step.name.startswith(DETACH_STEP_PREFIXES))


def _rebuilt(
    plan: Plan,
    mapped: Callable[[Step], Step] = lambda step: step,
    keep: Callable[[Step], bool] = lambda step: True,
) -> Plan:
    """`plan` with only the steps `keep` accepts, each `mapped`; stages left empty go."""

    def stages(listed: List[Tuple[Step, ...]]) -> List[Tuple[Step, ...]]:
        kept = (tuple(mapped(s) for s in stage if keep(s)) for stage in listed)
        return [stage for stage in kept if stage]

    rebuilt = Plan(notice=plan.notice, warnings=list(plan.warnings))
    rebuilt.prelude = [PreludeStep(mapped(p.step), p.hold) for p in plan.prelude if keep(p.step)]
    rebuilt.stages = stages(plan.stages)
    rebuilt.timed = [TimedStep(mapped(t.step), t.start_at) for t in plan.timed if keep(t.step)]
    rebuilt.finale = stages(plan.finale)
    return rebuilt


def earlier(notice: Notice, other: Notice) -> Notice:
    """`notice` with `other`'s time when that is earlier (same action: same deadline rule)."""
    if other.epoch < notice.epoch:
        return replace(notice, time=other.time, time_text=other.time_text)
    return notice
