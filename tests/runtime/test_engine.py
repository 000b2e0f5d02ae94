"""The Docker Engine seam (spotwatch/parts/runtime/engine.py) against a real dockerd and real
containers that trap SIGTERM (tests/dockerworld.py): finding containers, stopping many at
once with a stop timeout, waiting for them, and never raising when the daemon is not there."""

from __future__ import annotations

import threading
import time
from typing import Iterator

import pytest
from dockerworld import DockerWorld

from spotwatch.parts.runtime.engine import EXITED, FAILED, GONE, Engine, connect


@pytest.fixture
def world(dockerd: DockerWorld) -> Iterator[DockerWorld]:
    dockerd.remove_all()
    yield dockerd
    dockerd.remove_all()


@pytest.fixture
def engine(world: DockerWorld) -> Iterator[Engine]:
    found, why = connect(world.host)
    assert found is not None, why
    yield found
    found.close()


def test_the_daemon_of_the_tests_comes_up_in_seconds(dockerd: DockerWorld) -> None:
    """Starting dockerd and importing the image is what every Docker test waits for once."""
    assert 0 < dockerd.started_in < 30


def test_connect_speaks_the_daemons_api_version(engine: Engine) -> None:
    assert engine.api_version.startswith("1.")
    assert engine.server().startswith("Docker ")


def test_find_by_label_and_by_exact_name(world: DockerWorld, engine: Engine) -> None:
    web = world.run("web-1", labels={"app": "web"})
    world.run("web-10", labels={"app": "web"})
    world.run("batch-1", labels={"app": "batch"})
    by_label = engine.find(label="app=web")
    assert sorted(c.name for c in by_label.containers) == ["web-1", "web-10"]
    by_name = engine.find(names=["web-1"])  # the daemon matches "web-10" too; we do not
    assert [c.id for c in by_name.containers] == [web]
    assert engine.find(label="app=web", names=["batch-1"]).containers == []
    assert {c.name for c in engine.find().containers} == {"web-1", "web-10", "batch-1"}


def test_stop_stops_many_at_once_each_with_sigterm(world: DockerWorld, engine: Engine) -> None:
    """Six containers that each take 1 s to exit after SIGTERM are all stopped in about 1 s,
    not 6: the stops run at once, and each result comes once its container has exited."""
    ids = world.run_many([f"app-{n}" for n in range(6)], linger=1.0)
    began = time.monotonic()
    results = engine.stop(ids, t=10)
    took = time.monotonic() - began
    assert [r.outcome for r in results] == [EXITED] * 6
    assert 1.0 <= took < 5.0, took
    for n, cid in enumerate(ids):
        assert world.record(f"app-{n}") == ["up", "TERM"]
        assert world.state(cid)["Running"] is False
        assert world.state(cid)["ExitCode"] == 0  # its own exit, not a SIGKILL


def test_a_container_still_running_after_t_is_killed(world: DockerWorld, engine: Engine) -> None:
    cid = world.run("slow", linger=60)
    began = time.monotonic()
    [result] = engine.stop([cid], t=1)
    assert result.outcome == EXITED
    assert 1.0 <= time.monotonic() - began < 10
    assert world.record("slow") == ["up", "TERM"]
    assert world.state(cid)["ExitCode"] == 137  # SIGKILL


def test_stopped_already_or_gone_counts_as_exited(world: DockerWorld, engine: Engine) -> None:
    cid = world.run("once")
    assert [r.outcome for r in engine.stop([cid], t=5)] == [EXITED]
    [again, missing] = engine.stop([cid, "0" * 64], t=5)
    assert again.outcome == EXITED and missing.outcome == GONE
    assert missing.exited
    assert world.record("once") == ["up", "TERM"]  # one SIGTERM: the second stop sent none


def test_inspect_says_state_exit_code_and_restart_policy(
    world: DockerWorld, engine: Engine
) -> None:
    cid = world.run("kept", restart="always", labels={"k": "v"})
    details, why = engine.inspect(cid)
    assert why == "" and details is not None
    assert (details.name, details.running, details.restart_policy) == ("kept", True, "always")
    assert details.labels == {"k": "v"} and details.exit_code is None
    engine.stop([cid], t=5)
    details, _ = engine.inspect(cid)
    assert details is not None and not details.running and details.exit_code == 0
    assert engine.inspect("0" * 64) == (None, "")


def test_wait_exited_waits_for_a_stop_made_elsewhere(world: DockerWorld, engine: Engine) -> None:
    cid = world.run("waited", linger=0.5)
    [running] = engine.wait_exited([cid], 0.5)
    assert running.outcome == FAILED and "timed out" in running.error
    threading.Timer(0.2, lambda: world.api.stop(cid, timeout=5)).start()
    [done] = engine.wait_exited([cid], 10)
    assert done.outcome == EXITED and 0.5 <= done.seconds < 8


@pytest.mark.parametrize(
    ("host", "said"),
    [
        ("unix:///nonexistent/docker.sock", "[Errno 2] No such file or directory"),
        ("tcp://127.0.0.1:1", "[Errno 111] Connection refused"),
    ],
)
def test_no_daemon_is_a_reason_not_an_exception(host: str, said: str) -> None:
    engine, why = connect(host, timeout=1.0)
    assert engine is None
    assert why == f"{host}: {said}"
