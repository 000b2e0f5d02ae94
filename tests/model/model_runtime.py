"""ECS stops through the container runtime (§4, `ecs.stop_via: runtime`) in a played
sequence: each ECS task of the fleet has a container in the tests' real dockerd
(tests/dockerworld.py: it traps SIGTERM and exits), the agent stand-in lists them with their
DockerIds, and dockerd's own event stream says when each was told to stop and when it
exited. Those are the daemon's calls to the runtime, recorded the way `AwsEndpoint` records
AWS calls (`StopContainer`, service `docker`, with the task and the moment it exited); when
every container of a task has exited, the world does what the ECS agent does: the task
reaches STOPPED (in moto).
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from model_trace import AwsCall

if TYPE_CHECKING:
    from awshelpers import FakeAgent
    from dockerworld import DockerWorld
    from model_world import Fleet

STOP_SIGNAL = "15"  # POST /containers/{id}/stop sends SIGTERM first (then SIGKILL after t)


class RuntimeTasks:
    """The fleet's tasks as containers, and the record of what stopped them."""

    def __init__(self, docker: DockerWorld, agent: FakeAgent, fleet: Fleet) -> None:
        self.docker, self.fleet = docker, fleet
        docker.remove_all()
        names = [f"task{n}" for n in range(len(fleet.tasks))]
        ids = docker.run_many(names)
        self.task_of: Dict[str, str] = dict(zip(ids, fleet.tasks))
        for arn, name, container in zip(fleet.tasks, names, ids):
            agent.runs(arn, (name, container))
        self.agent = agent
        self.stops: List[Dict[str, Any]] = []  # {t, task, container}
        self.exits: Dict[str, float] = {}  # container -> when it exited
        self._lock = threading.Lock()
        self._stream = docker.api.events(since=int(time.time()) - 1, decode=True)
        self._thread = threading.Thread(target=self._watch, name="docker-events", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        try:
            for event in self._stream:
                self._seen(event)
        except Exception:  # the stream closed (the sequence ended)
            return

    def _seen(self, event: Dict[str, Any]) -> None:
        container = str(event.get("id", ""))
        task = self.task_of.get(container)
        if event.get("Type") != "container" or task is None:
            return
        moment = int(event.get("timeNano", 0)) / 1e9 or time.time()
        action = event.get("Action")
        attributes = (event.get("Actor") or {}).get("Attributes") or {}
        with self._lock:
            if action == "kill" and attributes.get("signal") == STOP_SIGNAL:
                self.stops.append({"t": moment, "task": task, "container": container})
            elif action == "die" and container not in self.exits:
                self.exits[container] = moment
                self._agent_reports_stopped(task)

    def _agent_reports_stopped(self, task: str) -> None:
        """Every container of the task exited: the agent reports it STOPPED to ECS."""
        for listed in self.agent.tasks:
            if listed["Arn"] == task:
                listed["KnownStatus"] = "STOPPED"
        from model_world import stop_in_moto

        stop_in_moto(self.fleet, task)

    def calls(self) -> List[AwsCall]:
        with self._lock:
            stops, exits = list(self.stops), dict(self.exits)
        found = []
        for stop in stops:
            params = {"task": stop["task"], "container": stop["container"]}
            params["exited"] = exits.get(stop["container"])
            found.append(AwsCall(stop["t"], "docker", "StopContainer", params))
        return found

    def close(self) -> None:
        self._stream.close()
        self._thread.join(5)


def exited(call: AwsCall) -> Optional[float]:
    value = call.params.get("exited")
    return float(value) if value is not None else None
