"""ECS stops through the container runtime (`ecs.stop_via`, CONTRACT §4) with real parts: a
real dockerd and real containers that trap SIGTERM (tests/dockerworld.py), the ECS agent
stand-in listing their DockerIds at /v1/tasks, and moto behind the recording endpoint
(tests/aws/proxy.py) showing which AWS calls were made: none for the tasks stopped here,
StopTask for those that must have it."""

from __future__ import annotations

import json
import logging
import subprocess
import textwrap
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, Iterator, List, Sequence

import pytest
from awshelpers import EcsWorld, FakeAgent, context, notice_in
from dockerworld import DockerWorld
from proxy import Proxy
from testkit import python_without

from spotwatch.commands.check_aws import runtime_check
from spotwatch.commands.results import ERROR
from spotwatch.config.schema import EcsSettings
from spotwatch.parts.awsapi.clients import AwsClients
from spotwatch.parts.ecs.agent import EcsTarget, short_id
from spotwatch.parts.ecs.empty import FinalStopWhenEmptyStep
from spotwatch.parts.ecs.steps import EcsFinalStopStep, EcsStopStep
from spotwatch.state.schema import OK

REGION = "us-east-1"
NOWHERE = "unix:///nonexistent/docker.sock"


@pytest.fixture
def docker(dockerd: DockerWorld) -> Iterator[DockerWorld]:
    dockerd.remove_all()
    yield dockerd
    dockerd.remove_all()


def on_host(
    world: EcsWorld,
    agent: FakeAgent,
    docker: DockerWorld,
    *,
    restarts: Sequence[str] = (),
    unlisted: Sequence[str] = (),
) -> Dict[str, List[str]]:
    """A container per task of the world, and a second one for the first standalone task
    that takes 1 s to exit after SIGTERM; the agent stand-in lists them (`restarts`: tasks
    whose containers have an ECS restart policy; `unlisted`: tasks it does not list).
    Task ARN -> its container names."""
    agent.serve(world)
    arns = world.standalone_tasks + world.service_tasks
    first = [f"c{n}" for n in range(len(arns))]
    names = {arn: [name] for arn, name in zip(arns, first)}
    ids = dict(zip(first, docker.run_many(first)))
    names[arns[0]].append("c0-sidecar")
    ids["c0-sidecar"] = docker.run("c0-sidecar", linger=1.0)
    for arn in arns:
        if arn not in unlisted:
            agent.runs(arn, *[(n, ids[n]) for n in names[arn]], restarts=arn in restarts)
    return names


def target(agent: FakeAgent, host: str, **settings: Any) -> EcsTarget:
    given = {"stop_via": "runtime", "stop_timeout": 5.0, **settings}
    ecs = EcsSettings(agent_url=agent.url, enabled=True, docker_host=host, **given)
    return EcsTarget(ecs, AwsClients(region=REGION))


def termed(docker: DockerWorld, names: Dict[str, List[str]], arns: Sequence[str]) -> List[bool]:
    """Per task in `arns`: did every one of its containers get SIGTERM?"""
    return [all("TERM" in docker.record(n) for n in names[arn]) for arn in arns]


def untouched(docker: DockerWorld, names: Dict[str, List[str]], arns: Sequence[str]) -> bool:
    return all(docker.record(n) == ["up"] for arn in arns for n in names[arn])


def final_stop(step_target: EcsTarget, seconds: float = 120, **options: Any) -> Any:
    step = EcsFinalStopStep(step_target, step_target.settings)
    return step.run(context(notice_in(seconds), **options))


def test_the_final_stop_stops_every_task_here_without_an_aws_call(
    proxy: Proxy, world: EcsWorld, agent: FakeAgent, docker: DockerWorld
) -> None:
    """Every container of every task gets SIGTERM and exits on its own; the tasks come from
    the agent, not ListTasks, and no StopTask is made. A task counts as stopped once all its
    containers exited: the step lasts as long as the slowest (1 s), not 5 x 1 s."""
    names = on_host(world, agent, docker)
    arns = world.standalone_tasks + world.service_tasks
    began = time.monotonic()
    outcome = final_stop(target(agent, docker.host))
    took = time.monotonic() - began
    assert outcome.status == OK, outcome.detail
    assert outcome.detail == (
        "stopped 5 tasks still running: 5 through the container runtime (t=5 s), "
        f"0 through StopTask; runtime: {', '.join(short_id(a) for a in arns)}"
    )
    assert termed(docker, names, arns) == [True] * 5
    assert 1.0 <= took < 5.0, took
    assert proxy.operations() == []  # no ListTasks, no StopTask: nothing reached AWS


def test_a_container_with_a_restart_policy_goes_through_stoptask(
    proxy: Proxy, world: EcsWorld, agent: FakeAgent, docker: DockerWorld, caplog: Any
) -> None:
    """The agent reports RestartCount for a container an ECS restart policy would start
    again after it exits: its task is stopped with StopTask (its container is not touched
    here), every other task here; the detail says which way each went and why."""
    kept = world.service_tasks[0]
    names = on_host(world, agent, docker, restarts=[kept])
    others = [a for a in world.standalone_tasks + world.service_tasks if a != kept]
    caplog.set_level(logging.INFO, "spotwatch")
    outcome = final_stop(target(agent, docker.host))
    assert outcome.status == OK, outcome.detail
    assert outcome.detail.startswith(
        "stopped 5 tasks still running: 4 through the container runtime (t=5 s), "
        "1 through StopTask; runtime: "
    )
    assert outcome.detail.endswith(f"; StopTask: {short_id(kept)} (restart policy of c3)")
    assert termed(docker, names, others) == [True] * 4
    assert untouched(docker, names, [kept])
    assert proxy.operations() == ["StopTask"]
    [stopped] = world.tasks([kept])
    assert stopped["desiredStatus"] == "STOPPED"
    assert stopped["stoppedReason"].startswith("Spot interruption: terminate at ")
    events = [getattr(r, "spotwatch", {}) for r in caplog.records]
    ways = {e["task"]: e["via"] for e in events if e.get("event") == "ecs-task-stopped"}
    assert ways == {**{a: "runtime" for a in others}, kept: "StopTask"}


def test_the_stop_step_stops_standalone_tasks_here_and_leaves_service_tasks(
    proxy: Proxy, world: EcsWorld, agent: FakeAgent, docker: DockerWorld
) -> None:
    """`ecs.stop: standalone`: the agent lists the tasks, DescribeTasks says which are
    standalone (the one AWS call), and only those are stopped, here."""
    names = on_host(world, agent, docker)
    step_target = target(agent, docker.host)
    outcome = EcsStopStep(step_target, step_target.settings).run(context(notice_in(120)))
    assert outcome.status == OK, outcome.detail
    assert outcome.detail.startswith(
        "stopped 3 standalone tasks: 3 through the container runtime (t=5 s), 0 through StopTask"
    )
    assert outcome.detail.endswith("(2 service tasks left)")
    assert termed(docker, names, world.standalone_tasks) == [True] * 3
    assert untouched(docker, names, world.service_tasks)
    assert proxy.operations() == ["DescribeTasks"]


def test_t_is_the_stop_timeout_capped_by_the_time_left(
    proxy: Proxy, world: EcsWorld, agent: FakeAgent, docker: DockerWorld
) -> None:
    """With ~3-4 s left before the deadline and stop_timeout 30 s, the runtime is told a t
    that leaves the answer time before the deadline: the container that would take 60 s
    gets SIGTERM, then SIGKILL after t, and the step ends before the deadline."""
    agent.serve(world)
    arn = world.standalone_tasks[0]
    agent.runs(arn, ("slow", docker.run("slow", linger=60)))
    step_target = target(agent, docker.host, stop_timeout=30.0)
    ctx = context(notice_in(14), margin=10.0)
    left = ctx.clock.time_left()
    step = EcsStopStep(step_target, replace(step_target.settings, stop="all"))
    outcome = step.run(ctx)
    assert outcome.status == OK, outcome.detail
    t = int(outcome.detail.split("(t=")[1].split(" s)")[0])
    assert 0 <= t <= left - 1.0
    assert ctx.clock.time_left() > 0  # done before the deadline
    assert docker.record("slow") == ["up", "TERM"]
    assert (
        docker.state(docker.api.containers(all=True, filters={"name": "slow"})[0]["Id"])["ExitCode"]
        == 137
    )
    assert "StopTask" not in proxy.operations()


def test_auto_without_a_runtime_is_the_api_path(
    proxy: Proxy, world: EcsWorld, agent: FakeAgent, docker: DockerWorld, caplog: Any
) -> None:
    """`auto` where no Docker Engine API answers: ListTasks and StopTask as `api` does, the
    same detail, the containers left alone, and the reason in the log (info, not an error)."""
    names = on_host(world, agent, docker)
    caplog.set_level(logging.INFO, "spotwatch")
    outcome = final_stop(target(agent, NOWHERE, stop_via="auto"))
    assert outcome.status == OK, outcome.detail
    assert outcome.detail == "stopped 5 tasks still running"
    assert sorted(proxy.operations()) == ["ListTasks"] + ["StopTask"] * 5
    assert untouched(docker, names, list(names))
    [said] = [r for r in caplog.records if "Docker Engine API" in r.getMessage()]
    assert said.levelno == logging.INFO
    assert "[Errno 2] No such file or directory" in said.getMessage()


def test_runtime_without_a_runtime_stops_with_stoptask_and_says_why(
    proxy: Proxy, world: EcsWorld, agent: FakeAgent, caplog: Any
) -> None:
    """`runtime` asked for and not there: the tasks are still stopped (StopTask), the detail
    and an error in the log say why not here."""
    agent.serve(world)
    caplog.set_level(logging.INFO, "spotwatch")
    outcome = final_stop(target(agent, NOWHERE))
    assert outcome.status == OK, outcome.detail
    assert outcome.detail == (
        "stopped 5 tasks still running (not through the runtime: runtime: "
        f"{NOWHERE}: [Errno 2] No such file or directory)"
    )
    assert proxy.count("StopTask") == 5
    assert any(
        r.levelno == logging.ERROR and "Docker Engine API" in r.getMessage() for r in caplog.records
    )


def test_a_dry_run_signals_nothing_and_changes_nothing(
    proxy: Proxy, world: EcsWorld, agent: FakeAgent, docker: DockerWorld
) -> None:
    names = on_host(world, agent, docker, restarts=[world.service_tasks[1]])
    outcome = final_stop(target(agent, docker.host), dry_run=True)
    assert outcome.status == OK, outcome.detail
    assert outcome.detail.startswith(
        "dry run: would stop 5 tasks still running: 4 through the container runtime "
        "(t=5 s), 1 through StopTask; runtime: "
    )
    assert untouched(docker, names, list(names))
    assert proxy.operations() == []


def test_an_agent_without_a_task_list_leaves_it_to_ecs(
    proxy: Proxy, world: EcsWorld, agent: FakeAgent, docker: DockerWorld
) -> None:
    """The agent answers /v1/metadata but not /v1/tasks: ECS lists the tasks (ListTasks) and
    stops them (StopTask), each with that reason; nothing is stopped here."""
    names = on_host(world, agent, docker)
    agent.tasks_status = 500
    outcome = final_stop(target(agent, docker.host))
    assert outcome.status == OK, outcome.detail
    assert outcome.detail.startswith(
        "stopped 5 tasks still running: 0 through the container runtime, 5 through StopTask; "
        "StopTask: "
    )
    assert "(ECS agent: http://127.0.0.1:" in outcome.detail
    assert "/v1/tasks: HTTP 500)" in outcome.detail
    assert untouched(docker, names, list(names))
    assert sorted(proxy.operations()) == ["ListTasks"] + ["StopTask"] * 5


def test_the_auto_scaling_final_stop_stops_what_is_left_here(
    proxy: Proxy, world: EcsWorld, agent: FakeAgent, docker: DockerWorld
) -> None:
    """The final stop of an Auto Scaling termination (parts/ecs/empty.py) asks ECS whether
    tasks are left, and at its moment stops those here; a task ECS lists and the agent does
    not gets StopTask."""
    unlisted = world.service_tasks[1]
    names = on_host(world, agent, docker, unlisted=[unlisted])
    step_target = target(agent, docker.host, stop_timeout=2.0)
    step = FinalStopWhenEmptyStep(EcsFinalStopStep(step_target, step_target.settings), poll=0.2)
    notice = replace(notice_in(13), source="target-lifecycle-state")  # its moment has passed
    outcome = step.run(context(notice, margin=10.0))
    assert outcome.status == OK, outcome.detail
    assert "4 through the container runtime" in outcome.detail
    assert outcome.detail.endswith(f"StopTask: {short_id(unlisted)} (not listed by the ECS agent)")
    listed = [a for a in names if a != unlisted]
    assert termed(docker, names, listed) == [True] * 4
    assert proxy.count("StopTask") == 1


CHILD = """
import logging, sys, json
from spotwatch.config.schema import AutoscalingSettings, Config, EcsSettings, LoadBalancerSettings
from spotwatch.daemon.wiring import AwsParts
from spotwatch.commands.check_aws import runtime_check
from awshelpers import context, notice_in

logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(message)s")
config = Config(
    ecs=EcsSettings(enabled=True, agent_url={agent!r}, docker_host={host!r}),
    load_balancer=LoadBalancerSettings(enabled=False),
    autoscaling=AutoscalingSettings(enabled=False),
)
parts = AwsParts(config)  # the daemon's wiring: finds ECS, says what stop_via auto means
for _ in range(2):
    [timed] = parts.ecs.final(notice_in(120), config)
    print(json.dumps(timed.step.run(context(notice_in(120))).detail))
print(json.dumps(runtime_check(config.ecs).__dict__))
"""


def test_check_says_whether_the_runtime_answers_and_what_stop_via_will_do(
    docker: DockerWorld,
) -> None:
    answers = runtime_check(EcsSettings(docker_host=docker.host))
    assert answers.status == OK
    assert answers.detail.startswith("Docker ")
    assert f"answered at {docker.host} in " in answers.detail
    assert answers.detail.endswith(
        "auto stops tasks through the container runtime "
        "(StopTask for containers a restart policy would start again)"
    )
    silent = runtime_check(EcsSettings(docker_host=NOWHERE))
    assert (silent.status, silent.detail) == (
        OK,
        f"{NOWHERE}: [Errno 2] No such file or directory: auto stops tasks with StopTask",
    )
    required = runtime_check(EcsSettings(docker_host=NOWHERE, stop_via="runtime"))
    assert required.status == ERROR
    assert required.detail.startswith(f"ecs.stop_via is runtime but {NOWHERE}: [Errno 2]")
    assert runtime_check(EcsSettings(stop_via="api")).detail == (
        "ecs.stop_via is api: tasks are stopped with StopTask"
    )


def test_without_the_docker_sdk_auto_means_api_and_says_so_once(
    proxy: Proxy, world: EcsWorld, agent: FakeAgent, docker: DockerWorld, tmp_path: Path
) -> None:
    """In a process whose Python has no `docker` package, with a Docker daemon answering at
    docker_host: StopTask for every task, the containers left alone, and one log line saying
    why, however many stops follow."""
    names = on_host(world, agent, docker)
    argv, env = python_without(tmp_path, "docker")
    here = Path(__file__).parent
    env["PYTHONPATH"] += f":{here}:{here.parent}"  # awshelpers, and the testkit it imports
    code = textwrap.dedent(CHILD.format(agent=agent.url, host=docker.host))
    done = subprocess.run([*argv, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    first, second, check = done.stdout.splitlines()
    assert (json.loads(first), json.loads(second)) == (
        "stopped 5 tasks still running",
        "stopped 0 tasks still running",
    )
    assert json.loads(check)["status"] == "ok"
    assert json.loads(check)["detail"].startswith(
        "the docker SDK is not installed (No module named 'docker'): auto stops tasks with StopTask"
    )
    said = [line for line in done.stderr.splitlines() if "docker SDK is not installed" in line]
    assert len(said) == 1, done.stderr
    assert said[0].startswith("INFO ecs.stop_via is auto but the docker SDK is not installed")
    assert untouched(docker, names, list(names))
    assert proxy.count("StopTask") == 5
