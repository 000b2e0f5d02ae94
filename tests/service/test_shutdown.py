"""Stopping the daemon: running hooks get the grace, then SIGTERM and SIGKILL to their whole
process group; what did not finish is recorded `interrupted` (a restart takes it up); a
second SIGTERM shortens the wait; the exit status is 0 and the state file is written."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

import pytest
import yaml
from testkit import response_record, wait_for

from spotwatch.commands.settings import load_service_config
from spotwatch.daemon.shell import Daemon
from spotwatch.response.processes import group_alive
from spotwatch.simulator.imds import ImdsSimulator
from spotwatch.state.schema import INTERRUPTED


@pytest.fixture
def imds() -> Iterator[ImdsSimulator]:
    with ImdsSimulator() as simulator:
        yield simulator


def _daemon(tmp_path: Path, imds: ImdsSimulator, command: str, grace: float) -> Daemon:
    config = {
        "poll_interval": "200ms",
        "deadline_margin": "1s",
        "state_dir": str(tmp_path / "state"),
        "imds": {"endpoint": imds.endpoint, "timeout": "300ms", "user_data": False},
        "ecs": {"enabled": False},
        "hooks": [{"name": "long", "command": command, "timeout": "100s"}],
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    loaded = load_service_config(str(path), env={}, with_user_data=False)
    return Daemon(loaded, shutdown_grace=grace)


def _signal_when(started: Path, delays: list) -> threading.Thread:
    def send() -> None:
        wait_for(started.exists, timeout=15)
        for delay in delays:
            time.sleep(delay)
            os.kill(os.getpid(), signal.SIGTERM)  # to the main thread, in daemon.run()

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def _notice(imds: ImdsSimulator) -> None:
    when = datetime.now(timezone.utc) + timedelta(seconds=120)
    imds.set_instance_action("terminate", when.strftime("%Y-%m-%dT%H:%M:%SZ"))


def test_hooks_outliving_the_grace_are_ended_and_recorded_interrupted(tmp_path, imds):
    """Grace 1 s, a hook that ignores SIGTERM-free sleep for 60 s: the daemon returns 0 within
    the grace plus the kill time, the hook's group is gone, the step is `interrupted`.
    (Before: the hook was left running and recorded `running`.)"""
    started, pgid = tmp_path / "started", tmp_path / "pgid"
    daemon = _daemon(tmp_path, imds, f"echo $$ > {pgid}; touch {started}; sleep 60", grace=1.0)
    _notice(imds)
    sender = _signal_when(started, [0.0])
    began = time.monotonic()
    assert daemon.run() == 0
    took = time.monotonic() - began
    sender.join(5)
    assert took < 12, took
    group = int(pgid.read_text())
    wait_for(lambda: not group_alive(group), timeout=5)
    record = response_record(json.loads((tmp_path / "state" / "state.json").read_text()))
    assert {s["name"]: s["status"] for s in record["steps"]} == {"hook:long": INTERRUPTED}
    assert record["done"] is False  # a restart takes it up while the notice still shows


def test_a_second_sigterm_shortens_the_wait_and_still_exits_0(tmp_path, imds):
    """Grace 60 s; a second SIGTERM 0.5 s after the first: the hook is ended at once (SIGTERM
    to its group, which it obeys), run() returns 0 and the state file says `interrupted`.
    (Before: a second SIGTERM exited 143 and skipped the last state write.)"""
    started = tmp_path / "started"
    daemon = _daemon(tmp_path, imds, f"touch {started}; sleep 60", grace=60.0)
    _notice(imds)
    sender = _signal_when(started, [0.0, 0.5])
    began = time.monotonic()
    assert daemon.run() == 0
    sender.join(5)
    assert time.monotonic() - began < 15
    record = response_record(json.loads((tmp_path / "state" / "state.json").read_text()))
    assert {s["status"] for s in record["steps"]} == {INTERRUPTED}


def test_run_once_follows_the_same_shutdown_rules(workdir, imds, write_config, daemons):
    """`run --once` with a hook running: a first SIGTERM starts nothing new and lets the hook
    go on; a second one ends it (SIGTERM to its group); the exit status is 0 and the step is
    recorded `interrupted`. (Before: the first SIGTERM killed the process, status 143, and
    left the hook running and its step `running`.)"""
    started, pgid = workdir / "started", workdir / "pgid"
    hook = {"name": "long", "command": f"echo $$ > {pgid}; touch {started}; sleep 60"}
    config = write_config([{**hook, "timeout": "100s"}])
    _notice(imds)
    daemon = daemons(config, "--once")
    wait_for(started.exists, timeout=15)
    daemon.send(signal.SIGTERM)
    time.sleep(1.0)
    assert daemon.process.poll() is None  # running steps go on after the first SIGTERM
    daemon.send(signal.SIGTERM)
    assert daemon.process.wait(20) == 0, daemon.log()
    group = int(pgid.read_text())
    wait_for(lambda: not group_alive(group), timeout=5)
    record = response_record(json.loads((workdir / "state" / "state.json").read_text()))
    assert {s["name"]: s["status"] for s in record["steps"]} == {"hook:long": INTERRUPTED}


def test_sigterms_that_keep_coming_while_the_process_exits_still_exit_0(
    workdir, imds, write_config, daemons
):
    """A polling daemon with nothing running gets SIGTERM after SIGTERM, every 5 ms, until
    it is gone: whichever lands while it stops or while the interpreter exits, the exit
    status is 0 (CONTRACT §4: "a second SIGTERM shortens the wait; the exit status is still
    0"). (Before: a SIGTERM after `run` put back the default disposition killed it, -15.)"""
    daemon = daemons(write_config())
    wait_for(lambda: imds.count(path="/latest/meta-data/spot/instance-action") >= 2, timeout=15)
    end = time.monotonic() + 15
    while daemon.process.poll() is None and time.monotonic() < end:
        daemon.send(signal.SIGTERM)
        time.sleep(0.005)
    assert daemon.process.wait(5) == 0, daemon.log()
    assert daemon.log().count("SIGTERM received, stopping") == 1


def test_signals_while_the_daemon_prepares_are_acted_on_not_fatal(workdir, write_config, daemons):
    """IMDS refuses: before its first poll the daemon asks for the instance id for up to
    2 x imds.timeout (2 s here). A SIGHUP then is a reload once the poll loop runs, and a
    SIGTERM after it ends the daemon with exit 0. (Before: the handlers came after that
    preparation, and SIGHUP's default disposition killed the daemon; a Google Cloud watch,
    which starts while the daemon prepares, made a test of it fail now and then.)"""
    config = write_config(imds={"endpoint": "http://127.0.0.1:9", "timeout": "1s"})
    daemon = daemons(config)
    wait_for(lambda: "on Amazon EC2" in daemon.log(), timeout=15)
    daemon.send(signal.SIGHUP)
    wait_for(
        lambda: "config reloaded" in daemon.log() or daemon.process.poll() is not None,
        timeout=30,
    )
    assert daemon.process.poll() is None, daemon.log()
    daemon.send(signal.SIGTERM)
    assert daemon.process.wait(10) == 0, daemon.log()
