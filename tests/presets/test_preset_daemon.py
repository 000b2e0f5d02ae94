"""Preset hooks are steps of the response like hooks, in the real daemon (`python -m
spotwatch run` as a child, the IMDS simulator over HTTP, real processes, a local webhook and
http receivers): they run in `order` among command hooks, for the actions they subscribe
to, are recorded in state.json and `status`, and have their step events and metrics; in
`spotwatch rehearse` they only say what they would do."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest
import yaml
from preset_support import Trainer
from standins import Receiver
from testkit import DaemonProcess, child_env, lines, response_record, wait_for

from spotwatch.simulator.imds import ImdsSimulator

STAMP = 'echo "{name} $(date +%s.%N)" >> {out}'


@pytest.fixture
def receivers() -> Iterator[List[Receiver]]:
    made = [Receiver(), Receiver()]
    yield made
    for receiver in made:
        receiver.close()


def write_config(tmp_path: Path, imds: str, **extra: Any) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({
        "poll_interval": "200ms",
        "deadline_margin": "1s",
        "state_dir": str(tmp_path / "state"),
        "imds": {"endpoint": imds, "timeout": "300ms", "user_data": False},
        "ecs": {"enabled": False},
        **extra,
    }))  # fmt: skip
    path.chmod(0o600)
    return path


def stamps(out: Path) -> Dict[str, float]:
    return {line.split()[0]: float(line.split()[1]) for line in lines(out)}


def test_presets_run_in_order_among_hooks_with_records_events_and_metrics(
    tmp_path: Path, receivers: List[Receiver]
) -> None:
    """order 0: a command; order 1: the signal preset (waiting 1 s for the trainer to save)
    and the http preset, in parallel; order 2: a command, which starts only after the
    trainer has exited. A preset subscribed to another action does not run."""
    events, app = receivers
    trainer = Trainer(tmp_path, save=1.0)
    out = tmp_path / "order.log"
    hooks = [
        {"name": "first", "command": STAMP.format(name="first", out=out), "order": 0},
        {"name": "trainer", "preset": "signal", "order": 1, "timeout": "20s",
         "with": {"pidfile": str(trainer.pidfile), "signal": "USR1", "wait": True}},
        {"name": "tell-app", "preset": "http", "order": 1, "with": {"url": app.url}},
        {"name": "last", "command": STAMP.format(name="last", out=out), "order": 2},
        {"name": "not-now", "preset": "http", "actions": ["rebalance"],
         "with": {"url": app.url + "/rebalance"}},
    ]  # fmt: skip
    with ImdsSimulator() as imds:
        config = write_config(
            tmp_path, imds.endpoint, hooks=hooks,
            metrics={"textfile": str(tmp_path / "spotwatch.prom")},
            webhook={"url": events.url, "retries": 0},
        )  # fmt: skip
        daemon = DaemonProcess(config, tmp_path / "daemon.log")
        try:
            wait_for(lambda: (tmp_path / "state" / "poll.json").exists(), 20)
            imds.raise_notice("terminate", 60)
            state_file = tmp_path / "state" / "state.json"

            def done() -> Dict[str, Any]:
                record = response_record(json.loads(state_file.read_text()))
                steps = {step["name"]: step for step in record.get("steps", [])}
                ok = len(steps) == 4 and all(s["status"] == "ok" for s in steps.values())
                return steps if ok else {}

            steps = wait_for(done, 30)
            wait_for(lambda: any(b["event"] == "complete" for b in events.bodies), 10)
            time.sleep(0.5)  # the textfile is written after the next poll
            status = subprocess.run(
                [sys.executable, "-m", "spotwatch", "status", "--json", "-c", str(config)],
                capture_output=True, text=True, env=child_env(), timeout=30,
            )  # fmt: skip
        finally:
            daemon.stop()
        trainer.process.wait(5)

    at = stamps(out)
    assert at["first"] < trainer.when("SIGUSR1") < trainer.when("exit") < at["last"]
    assert steps["hook:trainer"]["kind"] == "hook"
    assert steps["hook:trainer"]["detail"].startswith(
        f"sent SIGUSR1 to PID {trainer.process.pid} ({trainer.pidfile}); it exited after"
    )
    assert steps["hook:tell-app"]["detail"].startswith(f"HTTP 200 from {app.url} after")
    assert [b["event"] for b in app.bodies] == ["notice"]  # not-now did not run
    shown = {s["name"]: s for s in json.loads(status.stdout)["steps"]}
    assert shown["hook:trainer"]["status"] == "ok" and shown["hook:trainer"]["kind"] == "hook"
    step_events = {b["step"]: b for b in events.bodies if b["event"] == "step"}
    assert step_events["hook:trainer"]["result"] == "ok"
    assert step_events["hook:tell-app"]["detail"] == steps["hook:tell-app"]["detail"]
    metrics = (tmp_path / "spotwatch.prom").read_text()
    assert 'spotwatch_step_duration_seconds{step="hook:trainer"} 1.' in metrics  # its 1 s save
    assert 'spotwatch_step_failures_total{step="hook:tell-app"} 0' in metrics
    log = daemon.log()
    assert "hook trainer (preset signal, T = " in log


def test_rehearse_only_says_what_each_preset_would_do(
    tmp_path: Path, receivers: List[Receiver]
) -> None:
    """`spotwatch rehearse` runs command hooks for real, and presets not at all: the
    timeline's steps are ok, the trainer gets no signal and the app no request."""
    _, app = receivers
    trainer = Trainer(tmp_path)
    config = write_config(tmp_path, "http://127.0.0.1:9", hooks=[
        {"name": "trainer", "preset": "signal",
         "with": {"pidfile": str(trainer.pidfile), "signal": "USR1"}},
        {"name": "tell-app", "preset": "http", "with": {"url": app.url}},
    ])  # fmt: skip
    try:
        done = subprocess.run(
            [sys.executable, "-m", "spotwatch", "rehearse", "-c", str(config), "--lead", "30"],
            capture_output=True, text=True, env=child_env(), timeout=120,
        )  # fmt: skip
    finally:
        trainer.process.kill()
        trainer.process.wait()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "rehearsal ok" in done.stdout
    assert trainer.signals() == [] and app.bodies == []
