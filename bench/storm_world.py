"""The ECS world of the live storm (bench/storm_live.py): one endpoint on 127.0.0.1 that
answers, for a fleet of N instances of one account, what the daemon's ECS steps call, each
instance's ECS agent introspection (`/agent/<n>/v1/metadata` and `/v1/tasks`, a container
per task), and the Docker Engine API those containers run under (`ecs.stop_via`: the
version, and a container's stop, which answers once the container has exited `shutdown`
seconds later; the task is then STOPPED, as the agent would report it).

Like ECS (and unlike moto) it serves calls concurrently, a thread per kept-alive
connection. Every call waits half the round trip, takes a token from its action's bucket
(bench/storm.py `Bucket`, the simulation's own), waits the other half, and is answered:
served, or HTTP 400 `{"__type": "ThrottlingException", "message": "Rate exceeded"}` as ECS
throttles. Every call is recorded: when its token was asked for (seconds after `arm()`),
action, instance, served.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from bench.ecs_endpoint import JsonHandler
from bench.loopback import serve
from bench.storm import Bucket, bucket_for

TARGET_PREFIX = "AmazonEC2ContainerServiceV20141113."
ACCOUNT = "123456789012"
REGION = "us-east-1"
CLUSTER = "storm"
CLUSTER_ARN = f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/{CLUSTER}"
THROTTLED = {"__type": "ThrottlingException", "message": "Rate exceeded"}


@dataclass(frozen=True)
class Call:
    at: float  # when its token was asked for, seconds after arm()
    action: str
    instance: int  # -1: no instance of ours
    served: bool


def container_instance_arn(n: int) -> str:
    return f"arn:aws:ecs:{REGION}:{ACCOUNT}:container-instance/{CLUSTER}/ci{n:04d}"


def task_arn(n: int, task: int) -> str:
    return f"arn:aws:ecs:{REGION}:{ACCOUNT}:task/{CLUSTER}/i{n:04d}t{task:02d}"


def docker_id(arn: str) -> str:
    """The one container of a task: 64 hex digits as Docker's, made from the task's name."""
    return arn.rsplit("/", 1)[-1].encode().hex().ljust(64, "0")


@dataclass(frozen=True)
class Exit:
    at: float  # when the container exited, seconds after arm()
    instance: int


class Fleet:
    """The world: per instance a container instance with `tasks` tasks, the first
    `standalone` of them standalone (group `family:batch`), the rest service tasks
    (`service:web`), all RUNNING. Thread-safe; `answer` is one ECS call."""

    def __init__(self, instances: int, tasks: int, standalone: int, restarting: int = 0) -> None:
        self.instances = instances
        self.owner: Dict[str, int] = {}
        self.restarting: Dict[str, bool] = {}  # an ECS restart policy keeps its container
        self.by_container: Dict[str, str] = {}
        self.group: Dict[str, str] = {}
        self.desired: Dict[str, str] = {}
        self.status: Dict[str, str] = {}
        for n in range(instances):
            self.owner[container_instance_arn(n)] = n
            self.status[container_instance_arn(n)] = "ACTIVE"
            for t in range(tasks):
                arn = task_arn(n, t)
                self.owner[arn] = n
                self.group[arn] = "family:batch" if t < standalone else "service:web"
                self.desired[arn] = "RUNNING"
                self.restarting[arn] = t >= tasks - restarting
                self.by_container[docker_id(arn)] = arn
        self._lock = threading.Lock()

    def instance_of(self, action: str, request: Dict[str, Any]) -> int:
        key = {
            "UpdateContainerInstancesState": (request.get("containerInstances") or [""])[0],
            "ListTasks": request.get("containerInstance", ""),
            "DescribeTasks": (request.get("tasks") or [""])[0],
            "StopTask": request.get("task", ""),
        }.get(action, "")
        return self.owner.get(key, -1)

    def answer(self, action: str, request: Dict[str, Any]) -> Tuple[int, Dict[str, Any]]:
        with self._lock:
            if action == "UpdateContainerInstancesState":
                arns = request.get("containerInstances", [])
                found = [a for a in arns if a in self.status]
                for arn in found:
                    self.status[arn] = request.get("status", "ACTIVE")
                return 200, {
                    "containerInstances": [
                        {"containerInstanceArn": a, "status": self.status[a]} for a in found
                    ],
                    "failures": [{"arn": a, "reason": "MISSING"} for a in arns if a not in found],
                }
            if action == "ListTasks":
                where = self.owner.get(request.get("containerInstance", ""), -2)
                wanted = request.get("desiredStatus", "RUNNING")
                arns = [
                    a for a, s in self.desired.items() if self.owner[a] == where and s == wanted
                ]
                return 200, {"taskArns": arns}
            if action == "DescribeTasks":
                arns = request.get("tasks", [])
                return 200, {
                    "tasks": [self._task(a) for a in arns if a in self.desired],
                    "failures": [
                        {"arn": a, "reason": "MISSING"} for a in arns if a not in self.desired
                    ],
                }
            if action == "StopTask":
                arn = request.get("task", "")
                if arn not in self.desired:
                    return 400, {"__type": "InvalidParameterException", "message": "no task"}
                self.desired[arn] = "STOPPED"
                return 200, {"task": self._task(arn)}
        return 400, {"__type": "InvalidAction", "message": f"{action} is not served here"}

    def _task(self, arn: str) -> Dict[str, Any]:
        return {
            "taskArn": arn,
            "clusterArn": CLUSTER_ARN,
            "group": self.group[arn],
            "lastStatus": "RUNNING",
            "desiredStatus": self.desired[arn],
        }

    def agent_tasks(self, n: int) -> Dict[str, Any]:
        """`/v1/tasks` of instance n's agent: its tasks still RUNNING, a container each."""
        with self._lock:
            arns = [a for a, s in self.desired.items() if self.owner[a] == n and s == "RUNNING"]
        tasks = []
        for arn in arns:
            container: Dict[str, Any] = {"DockerId": docker_id(arn), "Name": "app"}
            if self.restarting[arn]:
                container["RestartCount"] = 0
            tasks.append(
                {"Arn": arn, "DesiredStatus": "RUNNING", "KnownStatus": "RUNNING",
                 "Containers": [container]}
            )  # fmt: skip
        return {"Tasks": tasks}

    def container_exited(self, container: str) -> Tuple[int, bool]:
        """The agent sees the task's container exit and reports the task STOPPED: its
        instance (-1: no such container), and whether the task was still RUNNING (two
        steps may stop one container at once; it exits once)."""
        with self._lock:
            arn = self.by_container.get(container)
            if arn is None:
                return -1, False
            running = self.desired[arn] == "RUNNING"
            self.desired[arn] = "STOPPED"
            return self.owner[arn], running

    def running(self, n: int) -> int:
        with self._lock:
            return sum(1 for a, s in self.desired.items() if self.owner[a] == n and s == "RUNNING")


class StormEndpoint:
    """The fleet behind one HTTP endpoint, with the token buckets of ECS's action categories
    (spotwatch.parts.awsapi.buckets)."""

    def __init__(
        self,
        fleet: Fleet,
        buckets: Dict[str, Tuple[float, float]],
        rtt: float = 0.03,
        shutdown: float = 1.0,
    ) -> None:
        self.fleet, self.rtt, self.sizes, self.shutdown = fleet, rtt, dict(buckets), shutdown
        self.calls: List[Call] = []
        self.exits: List[Exit] = []
        self.agent_asks = 0
        self._lock = threading.Lock()
        self.arm()
        endpoint = self

        class Handler(JsonHandler):
            def do_GET(self) -> None:  # the ECS agent's introspection API, Docker's version
                parts = self.path.strip("/").split("/")
                if len(parts) == 4 and parts[0] == "agent" and parts[2:] == ["v1", "metadata"]:
                    with endpoint._lock:
                        endpoint.agent_asks += 1
                    arn = container_instance_arn(int(parts[1]))
                    self.send_json(200, {"Cluster": CLUSTER, "ContainerInstanceArn": arn})
                    return
                if len(parts) == 4 and parts[0] == "agent" and parts[2:] == ["v1", "tasks"]:
                    self.send_json(200, endpoint.fleet.agent_tasks(int(parts[1])))
                    return
                if parts[-1] == "version":
                    self.send_json(200, {"ApiVersion": "1.41", "Version": "storm"})
                    return
                self.send_json(404, {"message": "not found"})

            def do_POST(self) -> None:
                stop = re.fullmatch(
                    r"(/v[0-9.]+)?/containers/([0-9a-f]+)/stop", self.path.split("?")[0]
                )
                if stop:  # Docker: answered once the container has exited
                    self.rfile.read(int(self.headers.get("Content-Length") or 0))
                    found = endpoint.container_stop(stop.group(2))
                    self.reply(204 if found else 404, b"", "application/json")
                    return
                length = int(self.headers.get("Content-Length") or 0)
                request = json.loads(self.rfile.read(length) or b"{}")
                target = self.headers.get("X-Amz-Target", "")
                self.send_json(*endpoint.call(target[len(TARGET_PREFIX) :], request))

        self.server, self.url = serve(Handler)

    def arm(self, start: Optional[float] = None) -> None:
        """Full buckets and an empty record, time 0 = `start` (monotonic; default now)."""
        with self._lock:
            self.start = time.monotonic() if start is None else start
            self.buckets = {name: Bucket(*v) for name, v in self.sizes.items()}
            self.calls = []
            self.exits = []

    def call(self, action: str, request: Dict[str, Any]) -> Tuple[int, Dict[str, Any]]:
        time.sleep(self.rtt / 2)
        with self._lock:
            at = time.monotonic() - self.start
            bucket = self.buckets.get(bucket_for(action))
            served = bucket.take(max(at, 0.0)) if bucket else True
            self.calls.append(Call(at, action, self.fleet.instance_of(action, request), served))
        status, body = self.fleet.answer(action, request) if served else (400, THROTTLED)
        time.sleep(self.rtt / 2)
        return status, body

    def container_stop(self, container: str) -> bool:
        time.sleep(self.shutdown)
        n, first = self.fleet.container_exited(container)
        if first:
            with self._lock:
                self.exits.append(Exit(time.monotonic() - self.start, n))
        return n >= 0

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
