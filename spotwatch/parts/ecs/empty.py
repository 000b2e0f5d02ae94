"""The ECS final stop of a response something waits for: the Auto Scaling group, or a
system shutdown spotwatch holds back (CONTRACT §8).

A Spot notice ends the instance at a fixed time, so its final stop waits for that time -
`stop_timeout`. An Auto Scaling group waits for the lifecycle action instead, and a shutdown
for spotwatch's delay lock: keeping either waiting while the instance runs no task is waste.
So for such a notice the final stop starts with the response and asks ECS every few seconds:
as soon as no task is left running on the instance it is done, with nothing to stop; at the
deadline - `stop_timeout` it stops whatever is still running, as the Spot notice's final
stop would.

"Left running" is judged by each task's lastStatus, not its desired status: a task told to
stop (desired STOPPED) runs on for its stop timeout, until the agent reports it STOPPED.
So the tasks ECS wants running (ListTasks) count, and so do those told to stop (ListTasks
desiredStatus STOPPED) whose lastStatus (DescribeTasks) is not STOPPED yet.
"""

from __future__ import annotations

import logging
from typing import Callable, List

from spotwatch.config.schema import Config
from spotwatch.detection.notices import SHUTDOWN, Notice
from spotwatch.logevents import emit
from spotwatch.parts.autoscaling.lifecycle import is_asg_termination
from spotwatch.parts.awsapi.bounded import Bounded
from spotwatch.parts.ecs.agent import AgentInfo
from spotwatch.parts.ecs.steps import (
    EcsFinalStopStep,
    describe_tasks,
    final_stop_at,
    list_running_tasks,
)
from spotwatch.response.deadline import NoticeClock
from spotwatch.response.plan import StepContext, StepOutcome, TimedStep
from spotwatch.state.schema import INTERRUPTED, OK

log = logging.getLogger("spotwatch.ecs")

TASK_POLL = 2.0  # seconds between ListTasks calls while tasks are still leaving

TimedFor = Callable[[Notice, Config], List[TimedStep]]


def at_once(clock: NoticeClock) -> float:
    return clock.now()


def tasks_still_running(aws: Bounded, info: AgentInfo) -> List[str]:
    """The tasks on this instance whose lastStatus is not STOPPED: those ECS wants running,
    and those told to stop that still run out their stop timeout."""
    wanted = list_running_tasks(aws, info)
    told_to_stop = list_running_tasks(aws, info, desired="STOPPED")
    stopping = [
        str(task["taskArn"])
        for task in describe_tasks(aws, info, told_to_stop)
        if task.get("lastStatus") != "STOPPED"
    ]
    return wanted + [arn for arn in stopping if arn not in wanted]


class FinalStopWhenEmptyStep(EcsFinalStopStep):
    """Done when no task is left; StopTask for the rest at the deadline - `stop_timeout`."""

    def __init__(self, inner: EcsFinalStopStep, poll: float = TASK_POLL) -> None:
        super().__init__(inner.target, inner.settings)
        self.poll = poll

    def act(self, ctx: StepContext, info: AgentInfo) -> StepOutcome:
        final_at = final_stop_at(self.settings.stop_timeout)
        while True:
            arns = tasks_still_running(self.aws(ctx), info)
            if not arns:
                emit(log, logging.INFO, "ecs-empty", f"no task left on {info}")
                return StepOutcome(OK, "no task left on the instance: nothing to stop")
            wait = final_at(ctx.clock) - ctx.clock.now()
            if wait <= 0:
                return self._stop(ctx, info, arns, "tasks still running")
            if ctx.dry_run:  # nothing really leaves in a dry run: waiting would show nothing
                return StepOutcome(
                    OK,
                    f"dry run: would wait up to {wait:.0f} s for {len(arns)} tasks to leave, "
                    "then stop those still running",
                )
            if ctx.cancel.wait(min(self.poll, wait)):
                return StepOutcome(INTERRUPTED, f"{len(arns)} tasks still running")


def until_no_task_left(final: TimedFor) -> TimedFor:
    """The ECS final stop, started at once and ended by an empty instance, for a notice the
    Auto Scaling group or a held-back shutdown waits on; as it was for every other notice."""

    def timed(notice: Notice, config: Config) -> List[TimedStep]:
        found = list(final(notice, config))
        if not (is_asg_termination(notice) or notice.action == SHUTDOWN):
            return found
        return [
            TimedStep(FinalStopWhenEmptyStep(t.step), at_once)
            if isinstance(t.step, EcsFinalStopStep)
            else t
            for t in found
        ]

    return timed
