"""Finding this instance's ECS container instance through the agent, and keeping it found.

Discovery asks the ECS agent's introspection API (`<agent_url>/v1/metadata`) for the
cluster and the container instance ARN, at start and again on a notice. `ecs.enabled`:
`auto` turns ECS on only when the agent answers; `true` makes ECS required (an agent that
does not answer is a FAILED step, after retrying within the deadline); `false`: nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

from spotwatch.config.schema import EcsSettings
from spotwatch.detection.notices import Notice
from spotwatch.logevents import emit
from spotwatch.parts.awsapi.clients import AwsClients, region_from_arn
from spotwatch.parts.causes import short_cause
from spotwatch.response.deadline import NoticeClock
from spotwatch.response.plan import StepContext

log = logging.getLogger("spotwatch.ecs")

AGENT_TIMEOUT = 1.0  # per discovery attempt: the agent is on localhost
DISCOVERY_BUDGET = 10.0  # a step retries discovery this long at most (never past the deadline)
RETRY_PAUSE = 0.5
CALL_ROOM = 1.0  # discovery leaves the step this long for its own calls


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


def _ask(agent_url: str, path: str, timeout: float) -> object:
    """The agent's JSON answer at `path`; raises `DiscoveryError` saying why there is none."""
    import requests  # ~28 MB: a daemon with ECS off never imports it

    url = agent_url.rstrip("/") + path
    try:
        reply = requests.get(url, timeout=timeout)
    except requests.RequestException as failure:
        raise DiscoveryError(f"{url}: {short_cause(failure)}") from None
    if reply.status_code != 200:
        raise DiscoveryError(f"{url}: HTTP {reply.status_code}")
    try:
        data: object = reply.json()
    except (ValueError, RecursionError):  # deep nesting raises RecursionError, not ValueError
        raise DiscoveryError(f"{url}: the answer is not JSON") from None
    return data


def discover(agent_url: str, timeout: float = AGENT_TIMEOUT) -> AgentInfo:
    """Ask the agent's introspection API who we are in ECS; raises `DiscoveryError`."""
    data = _ask(agent_url, "/v1/metadata", timeout)
    cluster = data.get("Cluster") if isinstance(data, dict) else None
    arn = data.get("ContainerInstanceArn") if isinstance(data, dict) else None
    if not cluster or not arn:
        raise DiscoveryError(
            f"{agent_url.rstrip('/')}/v1/metadata: no Cluster and ContainerInstanceArn "
            "(not registered yet?)"
        )
    return AgentInfo(str(cluster), str(arn))


@dataclass(frozen=True)
class AgentContainer:
    name: str
    docker_id: str  # "" while the agent has not created it
    # An ECS container restart policy would start it again after it exits. Agents that can
    # restart containers (1.86.0 on, July 2024) report `RestartCount` exactly for those
    # (amazon-ecs-agent #4190); the policy itself is not in the answer.
    restarts: bool


@dataclass(frozen=True)
class AgentTask:
    arn: str
    containers: Tuple[AgentContainer, ...]


def tasks_on_instance(agent_url: str, timeout: float = AGENT_TIMEOUT) -> List[AgentTask]:
    """The tasks the agent runs here and does not mean to stop (`/v1/tasks`: neither known
    nor desired STOPPED), each with its containers; raises `DiscoveryError`. Entries the
    answer garbles are left out."""
    data = _ask(agent_url, "/v1/tasks", timeout)
    listed = data.get("Tasks") if isinstance(data, dict) else None
    if not isinstance(listed, list):
        raise DiscoveryError(f"{agent_url.rstrip('/')}/v1/tasks: no Tasks list")
    found: List[AgentTask] = []
    for task in listed:
        if not isinstance(task, dict) or not isinstance(task.get("Arn"), str):
            continue
        if "STOPPED" in (task.get("KnownStatus"), task.get("DesiredStatus")):
            continue
        listed_here = task.get("Containers")
        containers = tuple(
            AgentContainer(
                name=str(item.get("Name", "")),
                docker_id=item["DockerId"] if isinstance(item.get("DockerId"), str) else "",
                restarts="RestartCount" in item,
            )
            for item in (listed_here if isinstance(listed_here, list) else [])
            if isinstance(item, dict)
        )
        found.append(AgentTask(task["Arn"], containers))
    return found


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
            # Leave the step room for its own call: an answer found with no time left to use
            # it is no use.
            room = ctx.clock.time_left() - CALL_ROOM
            give_up = time.monotonic() + max(0.0, min(self._budget, room))
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
