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
from spotwatch.state.schema import INTERRUPTED


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
