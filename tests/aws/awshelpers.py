"""Helpers for the AWS tests (imported by conftest.py and the tests; unique name on purpose)."""

from __future__ import annotations

import json
import sys
import time
import types
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List, Optional, Tuple

import boto3

# `spotwatch.commands.check` imports the config loader's errors module, which lives on another
# branch until it is merged; stand in for it so the check preflights can be tested here.
try:
    import spotwatch.config.errors  # noqa: F401
except ImportError:  # pragma: no cover - only before the config branch is merged
    _errors = types.ModuleType("spotwatch.config.errors")

    class ConfigError(Exception):
        problems: List[str] = []

    _errors.ConfigError = ConfigError  # type: ignore[attr-defined]
    sys.modules["spotwatch.config.errors"] = _errors

from testkit import QuietHandler, serve_in_thread

from spotwatch.detection.notices import SOURCE_INSTANCE_ACTION, Notice
from spotwatch.response.deadline import NoticeClock
from spotwatch.response.plan import StepContext

REGION = "us-east-1"


@dataclass
class EcsWorld:
    cluster: str
    container_instance_arn: str
    instance_id: str
    service_tasks: List[str]
    standalone_tasks: List[str]
    ecs: Any
    ec2: Any

    def tasks(self, arns: List[str]) -> List[Dict[str, Any]]:
        found: List[Dict[str, Any]] = self.ecs.describe_tasks(cluster=self.cluster, tasks=arns)[
            "tasks"
        ]
        return found

    def running(self) -> List[str]:
        arns: List[str] = self.ecs.list_tasks(
            cluster=self.cluster,
            containerInstance=self.container_instance_arn,
            desiredStatus="RUNNING",
        )["taskArns"]
        return arns

    def instance_status(self) -> str:
        found = self.ecs.describe_container_instances(
            cluster=self.cluster, containerInstances=[self.container_instance_arn]
        )["containerInstances"][0]
        return str(found["status"])


def build_world(*, service: int = 2, standalone: int = 3, cluster: str = "spot") -> EcsWorld:
    ec2 = boto3.client("ec2", region_name=REGION)
    ecs = boto3.client("ecs", region_name=REGION)
    instance_id = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1)["Instances"][0][
        "InstanceId"
    ]
    ecs.create_cluster(clusterName=cluster)
    document = json.dumps({"instanceId": instance_id, "region": REGION})
    arn = ecs.register_container_instance(cluster=cluster, instanceIdentityDocument=document)[
        "containerInstance"
    ]["containerInstanceArn"]
    ecs.register_task_definition(
        family="app", containerDefinitions=[{"name": "app", "image": "busybox", "memory": 8}]
    )

    def run(count: int, group: Optional[str] = None) -> List[str]:
        arns: List[str] = []
        while count > 0:  # RunTask starts at most 10 at once
            batch = min(10, count)
            if group:
                answer = ecs.run_task(
                    cluster=cluster, taskDefinition="app", count=batch, group=group
                )
            else:  # moto then sets the group to family:app, as ECS does
                answer = ecs.run_task(cluster=cluster, taskDefinition="app", count=batch)
            arns += [t["taskArn"] for t in answer["tasks"]]
            count -= batch
        return arns

    services = run(service, group="service:web") if service else []
    singles = run(standalone) if standalone else []
    return EcsWorld(cluster, arn, instance_id, services, singles, ecs, ec2)


class FakeAgent:
    """The ECS agent's introspection API: GET /v1/metadata, and GET /v1/tasks answering
    `{"Tasks": tasks}` as the agent does (each task's `Arn`, statuses and `Containers` with
    their `DockerId`; `RestartCount` on a container an ECS restart policy restarts)."""

    def __init__(self) -> None:
        self.metadata: Dict[str, Any] = {}
        self.tasks: List[Dict[str, Any]] = []
        self.status = 200
        self.tasks_status = 200
        self.hits = 0
        agent = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                agent.hits += 1
                if self.path == "/v1/tasks":
                    body = json.dumps({"Tasks": agent.tasks}).encode()
                    self.reply(agent.tasks_status, body, "application/json")
                    return
                if self.path != "/v1/metadata":
                    self.send_error(404)
                    return
                body = json.dumps(agent.metadata).encode()
                self.reply(agent.status, body, "application/json")

        self.server, self.url = serve_in_thread(Handler)

    def runs(self, arn: str, *containers: Tuple[str, str], restarts: bool = False) -> None:
        """Lists task `arn` as RUNNING with (name, DockerId) containers; `restarts`: each
        has an ECS restart policy (the agent then reports its `RestartCount`)."""
        listed: List[Dict[str, Any]] = []
        for name, docker_id in containers:
            entry: Dict[str, Any] = {
                "DockerId": docker_id,
                "DockerName": f"ecs-{name}",
                "Name": name,
            }
            if restarts:
                entry["RestartCount"] = 0
            listed.append(entry)
        self.tasks.append(
            {
                "Arn": arn,
                "DesiredStatus": "RUNNING",
                "KnownStatus": "RUNNING",
                "Family": "app",
                "Version": "1",
                "Containers": listed,
            }
        )

    def serve(self, world: EcsWorld) -> None:
        self.metadata = {
            "Cluster": world.cluster,
            "ContainerInstanceArn": world.container_instance_arn,
            "Version": "Amazon ECS Agent - v1.80.0 (fake)",
        }

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class ScriptedEndpoint:
    """A tiny AWS JSON endpoint: answers each call from a script by operation name."""

    script: Dict[str, List[Tuple[int, Dict[str, Any]]]] = field(default_factory=dict)
    calls: List[Tuple[str, Dict[str, Any]]] = field(default_factory=list)
    url: str = ""

    def start(self) -> ScriptedEndpoint:
        endpoint = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                request = json.loads(self.rfile.read(length) or b"{}")
                operation = (self.headers.get("X-Amz-Target") or "").rsplit(".", 1)[-1]
                endpoint.calls.append((operation, request))
                answers = endpoint.script.get(operation) or [(200, {})]
                status, body = answers.pop(0) if len(answers) > 1 else answers[0]
                self.reply(status, json.dumps(body).encode(), "application/x-amz-json-1.1")

        self._server, self.url = serve_in_thread(Handler)
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def count(self, operation: str) -> int:
        return sum(1 for op, _ in self.calls if op == operation)


# --------------------------------------------------------------------- notices


def notice_in(seconds: float, action: str = "terminate") -> Notice:
    """A notice whose time is `seconds` from now (IMDS gives whole seconds: rounded up)."""
    moment = datetime.now(timezone.utc) + timedelta(seconds=seconds)
    if moment.microsecond:
        moment = moment.replace(microsecond=0) + timedelta(seconds=1)
    text = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    return Notice(action=action, time=moment, time_text=text, source=SOURCE_INSTANCE_ACTION)


def context(
    notice: Notice,
    *,
    margin: float = 10.0,
    dry_run: bool = False,
    instance_id: str = "i-0123456789abcdef0",
) -> StepContext:
    return StepContext(clock=NoticeClock(notice, margin), instance_id=instance_id, dry_run=dry_run)


class ListJournal:
    """A StepJournal that keeps everything in memory."""

    def __init__(self) -> None:
        self.started: Dict[str, float] = {}
        self.ended: Dict[str, Tuple[str, str, float]] = {}
        self.monotonic_start: Dict[str, float] = {}

    def finished_status(self, step: str) -> Optional[str]:
        return None

    def step_started(self, step: Any, wall: float) -> None:
        self.started[step.name] = wall
        self.monotonic_start[step.name] = time.monotonic()

    def step_ended(self, step: Any, outcome: Any, started: float, ended: float) -> None:
        self.ended[step.name] = (outcome.status, outcome.detail, ended)

    def response_ended(self, plan: Any, outcomes: Any) -> None:
        pass
