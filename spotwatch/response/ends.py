"""One end, one response: signals that mean the same end of the instance share a response.

A Spot `terminate` and an Auto Scaling `Terminated`, a Spot `stop` and a scheduled
`instance-stop`, a system shutdown and any response that ends the instance: different
signals, one end. Whichever comes second joins the response of the first: of its own plan
it keeps only the steps the first does not have (the lifecycle action, the instance
action), which wait for the first response to end; the earlier deadline governs both. No
hook runs twice for one end. A first response that has already ended on this boot is not
waited for: the second runs only its own steps. A canceled response ended nothing.

`same_end` is the rule; the responder (response/responder.py) applies it to every notice,
so a new signal of one of these actions joins without code of its own, and the shutdown
guard (daemon/shutdown.py) asks it whether a shutdown has a response to wait for already.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import AbstractSet, Optional

from spotwatch.detection.notices import SHUTDOWN, SOURCE_TARGET_LIFECYCLE_STATE, Notice
from spotwatch.response.plan import Plan, Step, StepContext, StepOutcome
from spotwatch.state.schema import OK

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


class JoinStep(Step):
    """Waits for the response this one joined, so its own steps come after that one's."""

    kind = "join"

    def __init__(self, first_key: str, ended: Optional[threading.Event]) -> None:
        super().__init__(f"join:{first_key}")
        self.first_key = first_key
        self.ended = ended

    def run(self, ctx: StepContext) -> StepOutcome:
        while self.ended is not None and not self.ended.wait(JOIN_SLICE):
            if ctx.cancel.is_set():
                break
        return StepOutcome(OK, f"joined the response {self.first_key}")


def joined_plan(
    plan: Plan,
    first_key: str,
    first_steps: AbstractSet[str],
    first_notice: Notice,
    ended: Optional[threading.Event],
) -> Plan:
    """`plan` without the steps the first response has (and without detaching when the group
    terminates the instance), its own steps after a `JoinStep`."""
    group_ends = SOURCE_TARGET_LIFECYCLE_STATE in (plan.notice.signal, first_notice.signal)

    def own(step: Step) -> bool:
        if group_ends and step.name.startswith(DETACH_STEP_PREFIXES):
            return False
        return step.name not in first_steps

    joined = Plan(notice=plan.notice, warnings=list(plan.warnings))
    joined.prelude = [p for p in plan.prelude if own(p.step)]
    joined.stages = [(JoinStep(first_key, ended),)]
    joined.stages += [kept for kept in (tuple(filter(own, s)) for s in plan.stages) if kept]
    joined.timed = [t for t in plan.timed if own(t.step)]
    joined.finale = [kept for kept in (tuple(filter(own, s)) for s in plan.finale) if kept]
    return joined


def earlier(notice: Notice, other: Notice) -> Notice:
    """`notice` with `other`'s time when that is earlier (same action: same deadline rule)."""
    if other.epoch < notice.epoch:
        return replace(notice, time=other.time, time_text=other.time_text)
    return notice
