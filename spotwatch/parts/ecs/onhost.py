"""The ECS stop and final stop through the container runtime on this host (`ecs.stop_via`).

StopTask goes through a regional API whose throttling bucket a fleet-wide reclaim empties in
seconds (docs/benchmarks.md, "Storm"). So, unless `stop_via` is `api`, a task is stopped
here instead: every container of it (the agent's `/v1/tasks` gives each one's DockerId) gets
the Docker Engine API's stop with `t` = `ecs.stop_timeout`, capped by the time left, the
containers of all tasks at once (spotwatch.parts.runtime.engine). The agent sees them exit
and reports the tasks STOPPED itself; a task counts as stopped when all its containers have
exited. StopTask is still used for the tasks that must have it, each with its reason in the
step's detail: a container an ECS restart policy would start again after that exit, a task
the agent does not list or has started no container of, a container the runtime failed to
stop, and every task when the runtime does not answer (`auto`: quietly; `runtime`: as an
error). Without the docker SDK, `auto` means `api`, and that is said once.
"""

from __future__ import annotations

import logging
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from spotwatch.config.schema import EcsSettings
from spotwatch.logevents import emit
from spotwatch.parts.ecs.agent import (
    AGENT_TIMEOUT,
    AgentTask,
    DiscoveryError,
    short_id,
    tasks_on_instance,
)
from spotwatch.parts.runtime.engine import Engine, connect, sdk_missing
from spotwatch.response.plan import StepContext, StepOutcome
from spotwatch.state.schema import FAILED, OK

log = logging.getLogger("spotwatch.ecs")

CALL_BOUND = 1.0  # each Docker call's bound beyond a stop's t: a local daemon answers in ms
VIA_API = "StopTask"
VIA_RUNTIME = "runtime"

# StopTask for these ARNs: (stopped, [(arn, why not)]), as spotwatch.parts.ecs.steps does it.
StopWithApi = Callable[[Sequence[str]], Tuple[List[str], List[Tuple[str, str]]]]

_sdk_said = threading.Event()


def say_if_sdk_missing(settings: EcsSettings) -> Optional[str]:
    """Why the runtime cannot be used for want of the SDK (None: it can); said in the log
    the first time only (info for `auto`, which then means `api`; a warning for `runtime`)."""
    if settings.stop_via == "api":
        return None
    missing = sdk_missing()
    if missing and not _sdk_said.is_set():
        _sdk_said.set()
        auto = settings.stop_via == "auto"
        emit(
            log,
            logging.INFO if auto else logging.WARNING,
            "ecs-runtime-off",
            f"ecs.stop_via is {settings.stop_via} but {missing}: ECS tasks are stopped with "
            "StopTask (pip install 'spotwatch[docker]')",
        )
    return missing


class OnHost:
    """One step run's stops on this host: the agent's tasks (asked once) and the runtime."""

    def __init__(self, settings: EcsSettings, ctx: StepContext) -> None:
        self.settings = settings
        self.ctx = ctx
        self._tasks: Optional[Dict[str, AgentTask]] = None
        self._tasks_why = ""
        self._why_not = ""  # why the runtime cannot be used, once found

    def usable(self) -> bool:
        """Whether the runtime answers (else the step is what `api` makes it; `why_not`)."""
        engine, _ = self._engine()
        if engine is not None:
            engine.close()
        return engine is not None

    @property
    def why_not(self) -> str:
        return self._why_not

    def running(self) -> Optional[List[str]]:
        """ARNs of the tasks the agent runs here, when they are to be stopped here; None
        when the runtime cannot stop them or the agent does not answer (the caller then
        asks ECS: ListTasks, as `api` does)."""
        if not self.usable():
            return None
        found = self._agent_tasks()
        return None if found is None else list(found)

    def stop(self, arns: Sequence[str], what: str, with_api: StopWithApi) -> StepOutcome:
        engine, why_not = self._engine()
        tasks = self._agent_tasks() if engine is not None else None
        ways: Dict[str, str] = {}  # arn -> "" (runtime) or why StopTask
        for arn in arns:
            ways[arn] = why_not or _why_api(arn, tasks, self._tasks_why)
        local = {a: _ids(tasks, a) for a, why in ways.items() if not why}
        t = self._t(engine)
        try:
            if self.ctx.dry_run:
                return _dry_run(ways, local, t, what)
            return self._stop(engine, ways, local, t, what, with_api)
        finally:
            if engine is not None:
                engine.close()

    # ----------------------------------------------------------------- internals

    def _agent_tasks(self) -> Optional[Dict[str, AgentTask]]:
        if self._tasks is None and not self._tasks_why:
            bound = max(0.1, min(AGENT_TIMEOUT, self.ctx.clock.time_left()))
            try:
                listed = tasks_on_instance(self.settings.agent_url, bound)
            except DiscoveryError as failure:
                self._tasks_why = f"ECS agent: {failure}"
                emit(log, logging.WARNING, "ecs-agent-unreachable", self._tasks_why)
                return None
            self._tasks = {task.arn: task for task in listed}
        return self._tasks

    def _engine(self) -> Tuple[Optional[Engine], str]:
        """The runtime's client, or None and why StopTask instead (said in the log once a
        run: the listing asks first, the stop again)."""
        missing = say_if_sdk_missing(self.settings)
        if missing:
            self._why_not = missing
            return None, missing
        if self._why_not:
            return None, self._why_not
        host = self.settings.docker_host
        bound = max(0.1, min(CALL_BOUND, self.ctx.clock.time_left()))
        engine, why = connect(host, timeout=bound)
        if engine is None:
            auto = self.settings.stop_via == "auto"
            emit(
                log,
                logging.INFO if auto else logging.ERROR,
                "ecs-runtime-unreachable",
                f"Docker Engine API: {why}: ECS tasks are stopped with StopTask"
                + (" (ecs.stop_via: auto)" if auto else ""),
            )
            self._why_not = f"runtime: {why}"
            return None, self._why_not
        return engine, ""

    def _t(self, engine: Optional[Engine]) -> int:
        """The stop timeout the runtime gets: `stop_timeout`, and no more than leaves the
        stop's answer time before the deadline."""
        room = self.ctx.clock.time_left() - (engine.timeout if engine else CALL_BOUND)
        return max(0, math.floor(min(self.settings.stop_timeout, room)))

    def _stop(
        self,
        engine: Optional[Engine],
        ways: Dict[str, str],
        local: Dict[str, List[str]],
        t: int,
        what: str,
        with_api: StopWithApi,
    ) -> StepOutcome:
        api = [arn for arn, why in ways.items() if why]
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ecs-stoptask") as pool:
            asked = pool.submit(with_api, api) if api else None
            failed_here = self._stop_local(engine, local, t) if engine is not None else {}
            stopped, failed = asked.result() if asked is not None else ([], [])
        if failed_here:  # the runtime could not: StopTask, while time is left
            for arn, why in failed_here.items():
                ways[arn] = f"runtime failed: {why}"
            more, more_failed = with_api(list(failed_here))
            stopped, failed = stopped + more, failed + more_failed
        return _outcome(ways, stopped, failed, t, what)

    def _stop_local(self, engine: Engine, local: Dict[str, List[str]], t: int) -> Dict[str, str]:
        """Stops the containers of every task in `local` at once; {arn: why} for the tasks
        whose containers did not all exit."""
        owner = {cid: arn for arn, ids in local.items() for cid in ids}
        results = engine.stop(list(owner), t)
        failed: Dict[str, str] = {}
        took: Dict[str, float] = {}
        for result in results:
            arn = owner[result.container_id]
            took[arn] = max(took.get(arn, 0.0), result.seconds)
            if not result.exited and arn not in failed:
                failed[arn] = f"{result.container_id[:12]}: {result.error}"
        for arn in local:
            if arn in failed:
                emit(
                    log,
                    logging.ERROR,
                    "ecs-task-stop-failed",
                    f"runtime stop of task {short_id(arn)}: {failed[arn]}",
                    task=arn,
                    via=VIA_RUNTIME,
                )
            else:
                emit(
                    log,
                    logging.INFO,
                    "ecs-task-stopped",
                    f"stopped task {short_id(arn)} through the container runtime "
                    f"({_containers(len(local[arn]))} exited in {took.get(arn, 0.0):.1f} s, t={t})",
                    task=arn,
                    via=VIA_RUNTIME,
                )
        return failed


def _containers(count: int) -> str:
    return f"{count} container" + ("" if count == 1 else "s")


def _why_api(arn: str, tasks: Optional[Dict[str, AgentTask]], agent_why: str) -> str:
    """Why StopTask has to stop the task, or "" when the runtime may."""
    if tasks is None:
        return agent_why or "ECS agent: no answer"
    task = tasks.get(arn)
    if task is None:
        return "not listed by the ECS agent"
    kept = [c.name for c in task.containers if c.restarts]
    if kept:
        return f"restart policy of {', '.join(kept)}"
    if not any(c.docker_id for c in task.containers):
        return "no container started yet"
    return ""


def _ids(tasks: Optional[Dict[str, AgentTask]], arn: str) -> List[str]:
    task = (tasks or {}).get(arn)
    return [c.docker_id for c in task.containers if c.docker_id] if task else []


def _dry_run(ways: Dict[str, str], local: Dict[str, List[str]], t: int, what: str) -> StepOutcome:
    for arn, ids in local.items():
        emit(
            log,
            logging.INFO,
            "ecs-would-stop",
            f"would stop task {short_id(arn)} through the container runtime: "
            f"{_containers(len(ids))}, t={t}",
            task=arn,
        )
    api = {arn: why for arn, why in ways.items() if why}
    for arn, why in api.items():
        emit(
            log, logging.INFO, "ecs-would-stop", f"would StopTask {short_id(arn)}: {why}", task=arn
        )
    return StepOutcome(
        OK,
        f"dry run: would stop {len(ways)} {what}: {len(local)} through the container runtime "
        f"(t={t} s), {len(api)} through StopTask" + _listing(ways),
    )


def _outcome(
    ways: Dict[str, str],
    stopped: List[str],
    failed: List[Tuple[str, str]],
    t: int,
    what: str,
) -> StepOutcome:
    local = sum(1 for why in ways.values() if not why)
    done = local + len(stopped)
    how = f"{local} through the container runtime" + (f" (t={t} s)" if local else "")
    how += f", {len(stopped)} through StopTask" + _listing(ways)
    if failed:
        arn, error = failed[0]
        return StepOutcome(
            FAILED, f"stopped {done} of {len(ways)} {what}: {how}; {short_id(arn)}: {error}"
        )
    return StepOutcome(OK, f"stopped {done} {what}: {how}" if ways else f"stopped 0 {what}")


def _listing(ways: Dict[str, str]) -> str:
    """Which way each task went: `; runtime: a, b; StopTask: c (restart policy of app)`."""
    local = [short_id(arn) for arn, why in ways.items() if not why]
    api = [f"{short_id(arn)} ({why})" for arn, why in ways.items() if why]
    parts = ([f"{VIA_RUNTIME}: {', '.join(local)}"] if local else []) + (
        [f"{VIA_API}: {', '.join(api)}"] if api else []
    )
    return "; " + "; ".join(parts) if parts else ""
