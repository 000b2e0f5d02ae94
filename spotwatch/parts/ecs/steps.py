"""ECS on this instance: drain it, stop its tasks in time. (Finding it: ecs_agent.py.)

Steps: `EcsDrainStep` (DRAINING), `EcsStopStep` (StopTask for standalone
tasks, or all, right after the hooks) and `EcsFinalStopStep`, timed at notice time -
`stop_timeout` - `deadline_margin` so the agent's SIGTERM-then-SIGKILL fits before the
deadline. API failures become FAILED steps in the API's words; nothing here raises for them.
Every call is bounded by the time left (spotwatch.parts.awsapi.clients `Bounded`), or by less when a
step is told its own `bound`; the stop step's calls end when the final stop starts (it
stops whatever is still running), and the final stop's calls are urgent: under throttling
they come back sooner than the others (spotwatch.parts.awsapi.retry).
In dry run the read-only calls are made, so the log can name each task it would stop, and
nothing is changed.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from concurrent.futures import ThreadPoolExecutor
from typing import (
    Any,
    Callable,
    Dict,
    List,
    Optional,
    Sequence,
    Tuple,
)

from spotwatch.config.schema import Config, EcsSettings
from spotwatch.detection.notices import Notice
from spotwatch.logevents import emit
from spotwatch.parts.awsapi.bounded import Bounded
from spotwatch.parts.awsapi.clients import api_errors, describe_error
from spotwatch.parts.ecs.agent import (
    AgentInfo,
    DiscoveryError,
    EcsTarget,
    short_id,
)
from spotwatch.parts.ecs.onhost import VIA_API, OnHost
from spotwatch.response.deadline import NoticeClock
from spotwatch.response.plan import Step, StepContext, StepOutcome, TimedStep
from spotwatch.state.schema import FAILED, OK

log = logging.getLogger("spotwatch.ecs")

DESCRIBE_BATCH = 100  # DescribeTasks takes at most 100 tasks
STOP_WORKERS = 16  # concurrent StopTask calls; throttling retried while time allows
REASON_LIMIT = 255
# rebalance, hibernate, maintenance: no ECS
ECS_ACTIONS = ("terminate", "stop", "reboot", "shutdown")
SERVICE_GROUP = "service:"


def stop_reason(template: str, notice: Notice) -> str:
    """`ecs.stop_reason` with `{action}` and `{time}` filled in; a template that does not
    format is used as written."""
    try:
        text = template.format_map({"action": notice.action, "time": notice.time_text})
    except (KeyError, IndexError, ValueError):
        text = template
    return text[:REASON_LIMIT]


def list_running_tasks(aws: Bounded, info: AgentInfo, desired: str = "RUNNING") -> List[str]:
    """ARNs of the tasks on this container instance that ECS wants running (every page);
    `desired="STOPPED"`: those it was told to stop (recently: ECS forgets them in time)."""
    arns: List[str] = []
    query: Dict[str, Any] = {
        "cluster": info.cluster,
        "containerInstance": info.container_instance_arn,
        "desiredStatus": desired,
    }
    while True:
        page = aws.ecs("list_tasks", **query)
        arns.extend(page.get("taskArns", []))
        token = page.get("nextToken")
        if not token:
            return arns
        query["nextToken"] = token


def describe_tasks(aws: Bounded, info: AgentInfo, arns: Sequence[str]) -> List[Dict[str, Any]]:
    """DescribeTasks for `arns`, in batches of 100. Tasks gone by now are left out."""
    found: List[Dict[str, Any]] = []
    for first in range(0, len(arns), DESCRIBE_BATCH):
        answer = aws.ecs(
            "describe_tasks", cluster=info.cluster, tasks=list(arns[first : first + DESCRIBE_BATCH])
        )
        found.extend(answer.get("tasks", []))
    return found


def task_groups(aws: Bounded, info: AgentInfo, arns: Sequence[str]) -> Dict[str, str]:
    """Task ARN -> group (`service:web`, `family:x`, ...)."""
    return {task["taskArn"]: task.get("group", "") for task in describe_tasks(aws, info, arns)}


def is_service_group(group: str) -> bool:
    return group.startswith(SERVICE_GROUP)


def stop_tasks(
    aws: Bounded,
    cluster: str,
    arns: Sequence[str],
    reason: str,
    *,
    workers: int = STOP_WORKERS,
) -> Tuple[List[str], List[Tuple[str, str]]]:
    """StopTask for each ARN, `workers` at a time; returns (stopped, [(arn, error)])."""
    errors = api_errors()

    def one(arn: str) -> Tuple[str, Optional[str]]:
        try:
            aws.ecs("stop_task", cluster=cluster, task=arn, reason=reason)
        except errors as failure:
            return arn, describe_error(failure)
        return arn, None

    if not arns:
        return [], []
    with ThreadPoolExecutor(
        max_workers=max(1, min(workers, len(arns))), thread_name_prefix="ecs-stop"
    ) as pool:
        results = list(pool.map(one, arns))
    stopped = [arn for arn, error in results if error is None]
    failed = [(arn, error) for arn, error in results if error is not None]
    for arn in stopped:
        emit(
            log,
            logging.INFO,
            "ecs-task-stopped",
            f"stopped task {short_id(arn)}",
            task=arn,
            via=VIA_API,
        )
    for arn, error in failed:
        emit(
            log,
            logging.ERROR,
            "ecs-task-stop-failed",
            f"StopTask {short_id(arn)}: {error}",
            task=arn,
        )
    return stopped, failed


# --------------------------------------------------------------------- steps


class EcsStep(Step):
    """Finds this instance in ECS, then acts; every foreseeable failure is a FAILED outcome."""

    kind = "ecs"
    urgent = False  # the final stop's calls: back sooner under throttling

    def __init__(
        self,
        name: str,
        target: EcsTarget,
        settings: EcsSettings,
        *,
        bound: Optional[float] = None,
    ) -> None:
        super().__init__(name)
        self.target = target
        self.settings = settings
        self.bound = bound  # seconds from the step's start its calls may take, at most

    def aws(self, ctx: StepContext) -> Bounded:
        """The step's calls, bounded by the time left, its own `bound` and `until()`."""
        clock = ctx.clock
        own = None if self.bound is None else clock.now() + self.bound
        until = self.until(clock)
        if until is not None and until <= clock.now():
            until = None  # started late: the deadline bounds it, as it bounds the final stop
        ends = [x for x in (own, until) if x is not None]

        def time_left() -> float:
            left = clock.time_left()
            if ends:
                left = min(left, min(ends) - clock.now())
            return left

        return self.target.clients.bounded(time_left, urgent=self.urgent)

    def until(self, clock: NoticeClock) -> Optional[float]:
        """A monotonic moment after which the step's calls are no use (None: the deadline)."""
        return None

    def run(self, ctx: StepContext) -> StepOutcome:
        try:
            info = self.target.for_notice(ctx)
        except DiscoveryError as failure:
            emit(log, logging.ERROR, "ecs-agent-unreachable", f"{self.name}: ECS agent: {failure}")
            return StepOutcome(FAILED, f"ECS agent: {failure}")
        try:
            return self.act(ctx, info)
        except api_errors() as failure:
            detail = describe_error(failure)
            emit(log, logging.ERROR, "ecs-failed", f"{self.name}: {detail}", cluster=info.cluster)
            return StepOutcome(FAILED, detail)

    @abstractmethod
    def act(self, ctx: StepContext, info: AgentInfo) -> StepOutcome:
        """The step's own calls, once the instance is known."""

    def _here(self, ctx: StepContext) -> Optional[OnHost]:
        """This run's stops on this host (`ecs.stop_via` auto or runtime), or None (api)."""
        return None if self.settings.stop_via == "api" else OnHost(self.settings, ctx)

    def _running(self, ctx: StepContext, info: AgentInfo, here: Optional[OnHost]) -> List[str]:
        """The tasks to stop: as the agent lists them when the stops are made here (no
        throttled ListTasks; ECS asked when the agent does not answer), else ListTasks."""
        found = here.running() if here is not None else None
        return found if found is not None else list_running_tasks(self.aws(ctx), info)

    def _stop(
        self,
        ctx: StepContext,
        info: AgentInfo,
        arns: Sequence[str],
        what: str,
        here: Optional[OnHost] = None,
    ) -> StepOutcome:
        reason = stop_reason(self.settings.stop_reason, ctx.notice)
        here = here or self._here(ctx)
        if here is not None and here.usable():
            return here.stop(
                arns, what, lambda chosen: stop_tasks(self.aws(ctx), info.cluster, chosen, reason)
            )
        # StopTask for all: `api`, or the runtime does not answer (`auto` then means `api`;
        # `runtime` says why in the detail too).
        wanted = here is not None and self.settings.stop_via == "runtime"
        unlike = f" (not through the runtime: {here.why_not})" if here and wanted else ""
        if ctx.dry_run:
            for arn in arns:
                emit(
                    log,
                    logging.INFO,
                    "ecs-would-stop",
                    f"would stop task {short_id(arn)} in cluster {info.cluster}: {reason!r}",
                    task=arn,
                )
            return StepOutcome(OK, f"dry run: would stop {len(arns)} {what}{unlike}")
        stopped, failed = stop_tasks(self.aws(ctx), info.cluster, arns, reason)
        if failed:
            first_arn, first_error = failed[0]
            return StepOutcome(
                FAILED,
                f"stopped {len(stopped)} of {len(arns)} {what}{unlike}; "
                f"{short_id(first_arn)}: {first_error}",
            )
        return StepOutcome(OK, f"stopped {len(stopped)} {what}{unlike}")


class EcsDrainStep(EcsStep):
    """UpdateContainerInstancesState(DRAINING): services move their tasks elsewhere."""

    def __init__(
        self, target: EcsTarget, settings: EcsSettings, *, bound: Optional[float] = None
    ) -> None:
        super().__init__("ecs:drain", target, settings, bound=bound)

    def act(self, ctx: StepContext, info: AgentInfo) -> StepOutcome:
        return self.set_status(ctx, info, "DRAINING", "ecs-draining")

    def set_status(self, ctx: StepContext, info: AgentInfo, status: str, event: str) -> StepOutcome:
        """UpdateContainerInstancesState(status) for this instance (dry run: says it would)."""
        if ctx.dry_run:
            emit(log, logging.INFO, "ecs-would-set", f"would set {info} to {status}")
            return StepOutcome(OK, "dry run")
        answer = self.aws(ctx).ecs(
            "update_container_instances_state",
            cluster=info.cluster,
            containerInstances=[info.container_instance_arn],
            status=status,
        )
        failures = answer.get("failures", [])
        if failures:
            why = "; ".join(
                f"{short_id(f.get('arn', info.container_instance_arn))}: {f.get('reason', '?')}"
                + (f" ({f['detail']})" if f.get("detail") else "")
                for f in failures
            )
            emit(log, logging.ERROR, "ecs-failed", f"{self.name}: {why}", cluster=info.cluster)
            return StepOutcome(FAILED, f"UpdateContainerInstancesState: {why}")
        emit(log, logging.INFO, event, f"{info} is {status}", cluster=info.cluster)
        return StepOutcome(OK, f"{info} set to {status}")


class EcsStopStep(EcsStep):
    """StopTask for this instance's standalone tasks (`ecs.stop: standalone`) or all of them."""

    def __init__(self, target: EcsTarget, settings: EcsSettings) -> None:
        super().__init__("ecs:stop", target, settings)
        self.mode = settings.stop

    def until(self, clock: NoticeClock) -> Optional[float]:
        # From then on the final stop stops whatever is still running, and its calls,
        # not ours, should get the bucket's tokens.
        if not self.settings.final_stop:
            return None
        return final_stop_at(self.settings.stop_timeout)(clock)

    def act(self, ctx: StepContext, info: AgentInfo) -> StepOutcome:
        aws = self.aws(ctx)
        here = self._here(ctx)
        arns = self._running(ctx, info, here)
        if self.mode == "all":
            return self._stop(ctx, info, arns, "tasks", here)
        groups = task_groups(aws, info, arns)
        chosen = [arn for arn in arns if arn in groups and not is_service_group(groups[arn])]
        services = sum(1 for arn in arns if is_service_group(groups.get(arn, "")))
        if services:
            emit(
                log,
                logging.INFO,
                "ecs-service-tasks",
                f"{services} service tasks left to DRAINING and the final stop",
                cluster=info.cluster,
            )
        outcome = self._stop(ctx, info, chosen, "standalone tasks", here)
        return StepOutcome(outcome.status, f"{outcome.detail} ({services} service tasks left)")


class EcsFinalStopStep(EcsStep):
    """StopTask for every task still running, `stop_timeout` + margin before the notice time."""

    urgent = True

    def __init__(self, target: EcsTarget, settings: EcsSettings) -> None:
        super().__init__("ecs:final-stop", target, settings)

    def act(self, ctx: StepContext, info: AgentInfo) -> StepOutcome:
        here = self._here(ctx)
        return self._stop(ctx, info, self._running(ctx, info, here), "tasks still running", here)


def final_stop_at(stop_timeout: float) -> Callable[[NoticeClock], float]:
    """When the final stop starts: notice time - stop_timeout - deadline_margin (so the
    agent's SIGTERM, stop_timeout, SIGKILL all end by the deadline)."""

    def start_at(clock: NoticeClock) -> float:
        return clock.monotonic_at(stop_timeout + clock.margin)

    return start_at


# --------------------------------------------------------------------- providers


class EcsResponse:
    """The ECS steps a notice gets, per the config in force when it comes."""

    def __init__(self, target: EcsTarget) -> None:
        self.target = target

    def _on(self, notice: Notice) -> bool:
        return notice.action in ECS_ACTIONS and self.target.wanted(notice)

    def drain(self, notice: Notice, config: Config) -> List[Step]:
        if not config.ecs.drain or not self._on(notice):
            return []
        return [EcsDrainStep(self.target, config.ecs)]

    def stop(self, notice: Notice, config: Config) -> List[Step]:
        if config.ecs.stop not in ("standalone", "all") or not self._on(notice):
            return []
        return [EcsStopStep(self.target, config.ecs)]

    def final(self, notice: Notice, config: Config) -> List[TimedStep]:
        if not config.ecs.final_stop or not self._on(notice):
            return []
        step = EcsFinalStopStep(self.target, config.ecs)
        return [TimedStep(step, final_stop_at(config.ecs.stop_timeout))]
