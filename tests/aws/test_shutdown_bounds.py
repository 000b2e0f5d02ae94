"""The shutdown rules (CONTRACT §4) for what is not a hook: SIGTERM stops AWS steps too
(abandoned when the grace is over, recorded `interrupted`, never left `running` or
`pending`), and events not yet delivered get at most 5 s more in all, however many sinks.

The daemon is a child process (`python -m spotwatch run`), against the IMDS simulator, the
fake ECS agent, moto behind the recording endpoint, and an event endpoint that never
answers."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest
from awshelpers import EcsWorld, FakeAgent, QuietHandler, serve_in_thread
from proxy import Proxy
from testkit import DaemonProcess, response_record, wait_for, write_service_config

from spotwatch.simulator.imds import ImdsSimulator
from spotwatch.state.schema import INTERRUPTED, SKIPPED


@pytest.fixture
def silent(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An HTTP endpoint that reads each request and never answers (for 60 s); SNS and
    EventBridge are pointed at it too."""
    closing = threading.Event()

    class Handler(QuietHandler):
        def do_POST(self) -> None:
            closing.wait(60)

    server, url = serve_in_thread(Handler)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SNS", url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_EVENTBRIDGE", url)
    try:
        yield url
    finally:
        closing.set()
        server.shutdown()
        server.server_close()


def state(tmp_path: Path) -> Dict[str, Any]:
    """The daemon's state document ({} before it wrote one)."""
    path = tmp_path / "state" / "state.json"
    document = json.loads(path.read_text()) if path.exists() else {}
    assert isinstance(document, dict)
    return document


def test_an_aws_step_in_flight_is_abandoned_and_recorded_interrupted(
    tmp_path: Path, imds: ImdsSimulator, world: EcsWorld, agent: FakeAgent, proxy: Proxy
) -> None:
    """The ECS drain hangs (the endpoint never answers) while the checkpoint runs; SIGTERM,
    then a second one: the hook is ended, the drain abandoned, the daemon exits 0 within the
    kill grace, and both steps are recorded `interrupted`.
    (Before: the drain was left `running` in the state file.)"""
    agent.serve(world)
    proxy.hang.add("UpdateContainerInstancesState")
    started = tmp_path / "started"
    config = write_service_config(
        tmp_path,
        imds.endpoint,
        ecs={"agent_url": agent.url, "stop": "none", "final_stop": False},
        hooks=[{"name": "long", "command": f"touch {started}; sleep 60", "timeout": "100s"}],
    )
    daemon = DaemonProcess(config, tmp_path / "daemon.log")
    try:
        imds.raise_notice("terminate", 120)
        wait_for(started.exists, timeout=20)
        daemon.send(signal.SIGTERM)
        time.sleep(0.5)
        daemon.send(signal.SIGTERM)  # shortens the wait: what runs is ended now
        began = time.monotonic()
        assert daemon.process.wait(20) == 0, daemon.log()
        took = time.monotonic() - began
    finally:
        daemon.stop(signal.SIGKILL)
    record = response_record(state(tmp_path))
    statuses = {s["name"]: s["status"] for s in record["steps"]}
    assert statuses == {"ecs:drain": INTERRUPTED, "hook:long": INTERRUPTED}, record
    assert took < 10, took  # the kill grace (5 s), not the drain's deadline


def test_a_superseded_response_abandoned_at_shutdown_is_ended_for_good(
    tmp_path: Path, imds: ImdsSimulator, world: EcsWorld, agent: FakeAgent, proxy: Proxy
) -> None:
    """A Spot `stop` response's ECS drain hangs; the notice turns `terminate` (its response
    supersedes the stop's, whose drain still hangs); SIGTERM twice: the stop response is
    ended for good (`done`, its steps `skipped`, superseded), since no restart takes up a
    notice that is no longer there; only the terminate response is left `interrupted` for
    the restart (CONTRACT §3, §4). (Before: the stop response was left not done, and stayed
    `responding` in `status` forever.)"""
    agent.serve(world)
    proxy.hang.add("UpdateContainerInstancesState")
    config = write_service_config(
        tmp_path, imds.endpoint, ecs={"agent_url": agent.url, "stop": "none", "final_stop": False}
    )
    daemon = DaemonProcess(config, tmp_path / "daemon.log")
    try:
        imds.raise_notice("stop", 120)
        wait_for(lambda: proxy.count("UpdateContainerInstancesState") == 1, timeout=20)
        imds.raise_notice("terminate", 120)
        wait_for(lambda: proxy.count("UpdateContainerInstancesState") == 2, timeout=20)
        daemon.send(signal.SIGTERM)
        time.sleep(0.2)
        daemon.send(signal.SIGTERM)
        assert daemon.process.wait(20) == 0, daemon.log()
    finally:
        daemon.stop(signal.SIGKILL)
    records = {r["notice"]["action"]: r for r in state(tmp_path)["responses"].values()}
    stop, terminate = records["stop"], records["terminate"]
    assert stop["done"] and stop["why_ended"] == "superseded by a terminate notice", stop
    assert {s["name"]: s["status"] for s in stop["steps"]} == {"ecs:drain": SKIPPED}
    assert not terminate["done"]
    assert {s["name"]: s["status"] for s in terminate["steps"]} == {"ecs:drain": INTERRUPTED}


def test_undelivered_events_get_at_most_5_s_in_all(
    tmp_path: Path, imds: ImdsSimulator, silent: str, aws_env: Any
) -> None:
    """Webhook, SNS and EventBridge all hang: the notice's events cannot be delivered. After
    SIGTERM the daemon gives them 5 s in all and exits 0.
    (Before: each sink's lane got up to 10 s of its own at exit, one after the other.)"""
    config = write_service_config(
        tmp_path,
        imds.endpoint,
        webhook={"url": silent + "/hook", "timeout": "2s"},
        events={
            "sns_topic_arn": "arn:aws:sns:us-east-1:123456789012:spot",
            "eventbridge_bus": "spot",
        },
    )
    daemon = DaemonProcess(config, tmp_path / "daemon.log")
    try:
        imds.raise_notice("terminate", 120)
        wait_for(lambda: response_record(state(tmp_path)).get("done"), timeout=20)
        daemon.send(signal.SIGTERM)
        began = time.monotonic()
        assert daemon.process.wait(40) == 0, daemon.log()
        took = time.monotonic() - began
    finally:
        daemon.stop(signal.SIGKILL)
    assert took < 8, took
