"""ECS on this instance: find it through the agent, drain it, stop its tasks in time.

Discovery asks the ECS agent's introspection API (`<agent_url>/v1/metadata`) for the
cluster and the container instance ARN, at start and again on a notice. `ecs.enabled`:
`auto` turns ECS on only when the agent answers; `true` makes ECS required (an agent that
does not answer is a FAILED step, after retrying within the deadline); `false`: nothing.

Steps: `EcsDrainStep` (DRAINING), `EcsStopStep` (StopTask for standalone
tasks, or all, right after the hooks) and `EcsFinalStopStep`, timed at notice time -
`stop_timeout` - `deadline_margin` so the agent's SIGTERM-then-SIGKILL fits before the
deadline. API failures become FAILED steps in the API's words; nothing here raises for them.
In dry run the read-only calls are made, so the log can name each task it would stop, and
nothing is changed.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from abc import abstractmethod
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import (
    TYPE_CHECKING,
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
from spotwatch.response.aws import AwsClients, api_errors, describe_error, region_from_arn
from spotwatch.response.deadline import NoticeClock
from spotwatch.response.plan import Step, StepContext, StepOutcome, TimedStep
from spotwatch.state.schema import FAILED, OK

if TYPE_CHECKING:
    from mypy_boto3_ecs import ECSClient

log = logging.getLogger("spotwatch.ecs")

AGENT_TIMEOUT = 1.0  # per discovery attempt: the agent is on localhost
DISCOVERY_BUDGET = 10.0  # a step retries discovery this long at most (never past the deadline)
RETRY_PAUSE = 0.5
DESCRIBE_BATCH = 100  # DescribeTasks takes at most 100 tasks
STOP_WORKERS = 16  # concurrent StopTask calls; throttling is retried by botocore
REASON_LIMIT = 255
ECS_ACTIONS = ("terminate", "stop", "reboot")  # rebalance, hibernate, maintenance: no ECS
SERVICE_GROUP = "service:"


@dataclass(frozen=True)
class AgentInfo:
    """What the ECS agent says about this instance."""

    cluster: str
    container_instance_arn: str

    @property
    def region(self) -> Optional[str]:
        return region_from_arn(self.container_instance_arn)

    def __str__(self) -> str:
        return (
            f"container instance {short_id(self.container_instance_arn)} in cluster {self.cluster}"
        )


class DiscoveryError(Exception):
    """The agent gave no usable answer; `str()` says why."""


def short_id(arn: str) -> str:
    return arn.rsplit("/", 1)[-1]


def _why(failure: BaseException) -> str:
    """requests' messages run to several lines of pool internals; keep the cause."""
    text = str(failure)
    found = re.search(r"\[Errno -?\d+\] [^'\")]+", text)
    if found:
        return found.group(0)
    if "timed out" in text.lower():
        return "timed out"
    return type(failure).__name__


def discover(agent_url: str, timeout: float = AGENT_TIMEOUT) -> AgentInfo:
    """Ask the agent's introspection API who we are in ECS; raises `DiscoveryError`."""
    import requests  # ~28 MB: a daemon with ECS off never imports it

    url = agent_url.rstrip("/") + "/v1/metadata"
    try:
        reply = requests.get(url, timeout=timeout)
    except requests.RequestException as failure:
        raise DiscoveryError(f"{url}: {_why(failure)}") from None
    if reply.status_code != 200:
        raise DiscoveryError(f"{url}: HTTP {reply.status_code}")
    try:
        data = reply.json()
    except (ValueError, RecursionError):  # deep nesting raises RecursionError, not ValueError
        raise DiscoveryError(f"{url}: the answer is not JSON") from None
    cluster = data.get("Cluster") if isinstance(data, dict) else None
    arn = data.get("ContainerInstanceArn") if isinstance(data, dict) else None
    if not cluster or not arn:
        raise DiscoveryError(f"{url}: no Cluster and ContainerInstanceArn (not registered yet?)")
    return AgentInfo(str(cluster), str(arn))


Fetch = Callable[[str, float], AgentInfo]


class EcsTarget:
    """This instance in ECS: the agent's answer, found at start and refreshed on a notice."""

    def __init__(
        self,
        settings: EcsSettings,
        clients: AwsClients,
        *,
        fetch: Fetch = discover,
        budget: float = DISCOVERY_BUDGET,
    ) -> None:
        self.settings = settings
        self.clients = clients
        self._fetch = fetch
        self._budget = budget
        self._lock = threading.Lock()  # guards the fields below
        self._refresh_lock = threading.Lock()  # one refresh at a time
        self._info: Optional[AgentInfo] = None
        self._refreshed_for: Optional[NoticeClock] = None
        self._decided: Optional[Tuple[Notice, bool]] = None

    @property
    def info(self) -> Optional[AgentInfo]:
        return self._info

    def start(self) -> Optional[AgentInfo]:
        """Discovery at daemon start; logs what it found (or why ECS is off)."""
        if self.settings.enabled is False:
            return None
        try:
            info = self._fetch(self.settings.agent_url, AGENT_TIMEOUT)
        except DiscoveryError as failure:
            if self.settings.enabled == "auto":
                emit(
                    log,
                    logging.INFO,
                    "ecs-off",
                    f"ECS agent not answering ({failure}): ECS steps off (ecs.enabled: auto)",
                )
            else:
                emit(
                    log,
                    logging.WARNING,
                    "ecs-agent-unreachable",
                    f"ECS agent not answering ({failure}); asking again on a notice",
                )
            return None
        self._found(info)
        return info

    def wanted(self, notice: Notice) -> bool:
        """Does this notice get ECS steps? Decided once per notice, on the poll thread: in
        `auto` mode an agent not seen yet gets one short probe (it may have started later)."""
        if self.settings.enabled is False:
            return False
        if self.settings.enabled is True:
            return True
        with self._lock:
            if self._decided is not None and self._decided[0] == notice:
                return self._decided[1]
            on = self._info is not None
            if not on:
                try:
                    self._found_locked(self._fetch(self.settings.agent_url, AGENT_TIMEOUT / 2))
                    on = True
                except DiscoveryError as failure:
                    emit(log, logging.DEBUG, "ecs-off", f"ECS agent still not answering: {failure}")
            self._decided = (notice, on)
            return on

    def for_notice(self, ctx: StepContext) -> AgentInfo:
        """The agent's answer, asked again once per notice and retried within the budget.

        Falls back to the answer found earlier when the agent does not answer now; raises
        `DiscoveryError` when there is none at all (a later step then tries again)."""
        # One refresh at a time; the state lock is never held while waiting on the agent,
        # so `wanted()` on the poll thread cannot be held up by a refresh.
        with self._refresh_lock:
            with self._lock:
                if self._refreshed_for is ctx.clock and self._info is not None:
                    return self._info
            give_up = time.monotonic() + max(0.0, min(self._budget, ctx.clock.time_left()))
            while True:
                try:
                    info = self._fetch(self.settings.agent_url, AGENT_TIMEOUT)
                    break
                except DiscoveryError as failure:
                    if time.monotonic() + RETRY_PAUSE >= give_up or ctx.cancel.is_set():
                        return self._fallback(failure, ctx)
                    time.sleep(RETRY_PAUSE)
            with self._lock:
                self._found_locked(info)
                self._refreshed_for = ctx.clock
            return info

    def _fallback(self, failure: DiscoveryError, ctx: StepContext) -> AgentInfo:
        with self._lock:
            known = self._info
            if known is not None:
                self._refreshed_for = ctx.clock  # tried for this notice: do not wait again
        if known is None:
            raise failure
        emit(
            log,
            logging.WARNING,
            "ecs-agent-unreachable",
            f"ECS agent not answering ({failure}); using {known} found earlier",
        )
        return known

    def _found(self, info: AgentInfo) -> None:
        with self._lock:
            self._found_locked(info)

    def _found_locked(self, info: AgentInfo) -> None:
        if info != self._info:
            region = self.settings.region or info.region or "unknown region"
            emit(
                log,
                logging.INFO,
                "ecs-on",
                f"ECS: {info} ({region})",
                cluster=info.cluster,
                container_instance=info.container_instance_arn,
            )
        self._info = info
        if not self.settings.region:
            self.clients.prefer_region(info.region)


# --------------------------------------------------------------------- API helpers


def stop_reason(template: str, notice: Notice) -> str:
    """`ecs.stop_reason` with `{action}` and `{time}` filled in; a template that does not
    format is used as written."""
    try:
        text = template.format_map({"action": notice.action, "time": notice.time_text})
    except (KeyError, IndexError, ValueError):
        text = template
    return text[:REASON_LIMIT]


def list_running_tasks(ecs: ECSClient, info: AgentInfo) -> List[str]:
    """ARNs of the tasks on this container instance that ECS wants running (every page)."""
    arns: List[str] = []
    pages = ecs.get_paginator("list_tasks").paginate(
        cluster=info.cluster, containerInstance=info.container_instance_arn, desiredStatus="RUNNING"
    )
    for page in pages:
        arns.extend(page.get("taskArns", []))
    return arns


def task_groups(ecs: ECSClient, info: AgentInfo, arns: Sequence[str]) -> Dict[str, str]:
    """Task ARN -> group (`service:web`, `family:x`, ...), in batches of 100. Tasks gone by
    now are left out."""
    groups: Dict[str, str] = {}
    for first in range(0, len(arns), DESCRIBE_BATCH):
        answer = ecs.describe_tasks(
            cluster=info.cluster, tasks=list(arns[first : first + DESCRIBE_BATCH])
        )
        for task in answer.get("tasks", []):
            groups[task["taskArn"]] = task.get("group", "")
    return groups


def is_service_group(group: str) -> bool:
    return group.startswith(SERVICE_GROUP)


def stop_tasks(
    ecs: ECSClient,
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
            ecs.stop_task(cluster=cluster, task=arn, reason=reason)
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
        emit(log, logging.INFO, "ecs-task-stopped", f"stopped task {short_id(arn)}", task=arn)
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

    def __init__(self, name: str, target: EcsTarget, settings: EcsSettings) -> None:
        super().__init__(name)
        self.target = target
        self.settings = settings

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

    def _stop(
        self, ctx: StepContext, info: AgentInfo, arns: Sequence[str], what: str
    ) -> StepOutcome:
        reason = stop_reason(self.settings.stop_reason, ctx.notice)
        if ctx.dry_run:
            for arn in arns:
                emit(
                    log,
                    logging.INFO,
                    "ecs-would-stop",
                    f"would stop task {short_id(arn)} in cluster {info.cluster}: {reason!r}",
                    task=arn,
                )
            return StepOutcome(OK, f"dry run: would stop {len(arns)} {what}")
        stopped, failed = stop_tasks(self.target.clients.ecs(), info.cluster, arns, reason)
        if failed:
            first_arn, first_error = failed[0]
            return StepOutcome(
                FAILED,
                f"stopped {len(stopped)} of {len(arns)} {what}; "
                f"{short_id(first_arn)}: {first_error}",
            )
        return StepOutcome(OK, f"stopped {len(stopped)} {what}")


class EcsDrainStep(EcsStep):
    """UpdateContainerInstancesState(DRAINING): services move their tasks elsewhere."""

    def __init__(self, target: EcsTarget, settings: EcsSettings) -> None:
        super().__init__("ecs:drain", target, settings)

    def act(self, ctx: StepContext, info: AgentInfo) -> StepOutcome:
        return self.set_status(ctx, info, "DRAINING", "ecs-draining")

    def set_status(self, ctx: StepContext, info: AgentInfo, status: str, event: str) -> StepOutcome:
        """UpdateContainerInstancesState(status) for this instance (dry run: says it would)."""
        if ctx.dry_run:
            emit(log, logging.INFO, "ecs-would-set", f"would set {info} to {status}")
            return StepOutcome(OK, "dry run")
        answer = self.target.clients.ecs().update_container_instances_state(
            cluster=info.cluster,
            containerInstances=[info.container_instance_arn],
            status=status,  # type: ignore[arg-type]
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

    def act(self, ctx: StepContext, info: AgentInfo) -> StepOutcome:
        ecs = self.target.clients.ecs()
        arns = list_running_tasks(ecs, info)
        if self.mode == "all":
            return self._stop(ctx, info, arns, "tasks")
        groups = task_groups(ecs, info, arns)
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
        outcome = self._stop(ctx, info, chosen, "standalone tasks")
        return StepOutcome(outcome.status, f"{outcome.detail} ({services} service tasks left)")


class EcsFinalStopStep(EcsStep):
    """StopTask for every task still running, `stop_timeout` + margin before the notice time."""

    def __init__(self, target: EcsTarget, settings: EcsSettings) -> None:
        super().__init__("ecs:final-stop", target, settings)

    def act(self, ctx: StepContext, info: AgentInfo) -> StepOutcome:
        arns = list_running_tasks(self.target.clients.ecs(), info)
        return self._stop(ctx, info, arns, "tasks still running")


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
