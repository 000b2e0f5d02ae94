"""The `docker-stop` preset against a real dockerd and real containers that trap SIGTERM
(tests/dockerworld.py): the matching containers get SIGTERM at once with t = T - 5, the hook
ends when all have exited, the others keep running; a container that outlives t is killed by
the engine; no engine, no container, dry run and `check` each say what they found."""

from __future__ import annotations

import time
from typing import Iterator

import pytest
from dockerworld import DockerWorld
from preset_support import context, preset_hook, run_step

from spotwatch.commands.check_presets import docker as check_docker
from spotwatch.parts.awsapi.clients import AwsClients
from spotwatch.parts.presetservices import DaemonServices

SERVICES = DaemonServices(AwsClients(), lambda: None)


@pytest.fixture
def world(dockerd: DockerWorld) -> Iterator[DockerWorld]:
    dockerd.remove_all()
    yield dockerd
    dockerd.remove_all()


def running(world: DockerWorld, container_id: str) -> bool:
    return bool(world.state(container_id)["Running"])


def test_matching_containers_stop_at_once_and_the_others_keep_running(
    world: DockerWorld,
) -> None:
    """Label app=worker or the name db: four containers that each take 1 s to save after
    SIGTERM all stop in about 1 s (at once, not one after the other); `web` is untouched."""
    workers = world.run_many(["ds-w1", "ds-w2", "ds-w3"], labels={"app": "worker"}, linger=1.0)
    db = world.run("ds-db", linger=1.0)
    web = world.run("ds-web", labels={"app": "web"})
    hook = preset_hook(
        "docker-stop",
        {"label": "app=worker", "names": ["ds-db"], "docker_host": world.host},
        timeout=30,
    )
    started = time.monotonic()
    outcome = run_step(hook, context(120), SERVICES)
    took = time.monotonic() - started
    assert outcome.status == "ok", outcome.detail
    assert outcome.detail.startswith("stopped 4 of 4 containers with t=25: ")
    assert 0.9 <= took < 4.0, took
    for name, cid in zip(["ds-w1", "ds-w2", "ds-w3", "ds-db"], [*workers, db]):
        assert world.record(name)[-1] == "TERM"
        state = world.state(cid)
        assert not state["Running"] and state["ExitCode"] == 0  # saved and exited itself
    assert running(world, web) and world.record("ds-web") == ["up"]


def test_t_is_t_minus_5_and_a_container_that_outlives_it_is_killed(world: DockerWorld) -> None:
    """T = 7 s (the hook's timeout): t = 2 s, so a container that needs 30 s after SIGTERM
    is SIGKILLed by the engine 2 s later (exit 137) and the hook still ends before T."""
    slow = world.run("ds-slow", linger=30.0)
    hook = preset_hook("docker-stop", {"names": ["ds-slow"], "docker_host": world.host}, timeout=7)
    started = time.monotonic()
    outcome = run_step(hook, context(120), SERVICES)
    took = time.monotonic() - started
    assert outcome.status == "ok", outcome.detail
    assert "with t=2" in outcome.detail
    assert 1.8 <= took < 7.0, took
    assert world.state(slow)["ExitCode"] == 137
    assert world.record("ds-slow") == ["up", "TERM"]


def test_neither_label_nor_names_stops_every_running_container(world: DockerWorld) -> None:
    world.run_many(["ds-one", "ds-two"])
    hook = preset_hook("docker-stop", {"docker_host": world.host})
    outcome = run_step(hook, context(60), SERVICES)
    assert outcome.status == "ok", outcome.detail
    assert outcome.detail.startswith("stopped 2 of 2 containers")


def test_no_matching_container_is_ok_and_says_so(world: DockerWorld) -> None:
    hook = preset_hook("docker-stop", {"label": "app=none", "docker_host": world.host})
    outcome = run_step(hook, context(60), SERVICES)
    assert outcome.status == "ok"
    assert outcome.detail == "no running container matched label app=none"


def test_dry_run_names_the_call_and_the_containers_and_stops_none(world: DockerWorld) -> None:
    cid = world.run("ds-keep", labels={"app": "worker"})
    hook = preset_hook("docker-stop", {"label": "app=worker", "docker_host": world.host})
    outcome = run_step(hook, context(60, dry_run=True), SERVICES)
    assert outcome.detail == (
        f"would POST /containers/{{id}}/stop?t=55 at {world.host} for label app=worker (ds-keep)"
    )
    assert running(world, cid)


def test_no_engine_fails_saying_why(tmp_path: object) -> None:
    hook = preset_hook("docker-stop", {"docker_host": "unix:///nonexistent/docker.sock"})
    outcome = run_step(hook, context(60), SERVICES)
    assert outcome.status == "failed"
    assert outcome.detail.startswith("unix:///nonexistent/docker.sock: ")


def test_check_asks_the_engine(world: DockerWorld) -> None:
    good = check_docker(world.host, SERVICES)
    assert good.status == "ok" and good.detail.startswith(f"Docker Engine at {world.host}: Docker ")
    bad = check_docker("unix:///nonexistent/docker.sock", SERVICES)
    assert bad.status == "error"
