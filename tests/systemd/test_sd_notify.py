"""notify.py speaks the plain NOTIFY_SOCKET protocol (no systemd-python needed): tested
against a datagram socket standing in for the service manager, directly and through a real
`spotwatch run` process (READY=1 with STATUS after the first poll, WATCHDOG=1 every poll,
RELOADING=1/READY=1 around SIGHUP, STOPPING=1 on SIGTERM, in that order)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, List

import pytest
import yaml

from spotwatch.host.notify import Notifier
from spotwatch.simulator.imds import ImdsSimulator

REPO = Path(__file__).resolve().parents[2]


class Manager:
    """A unix datagram socket that collects notifications like systemd would."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        bind_to = "\0" + path[1:] if path.startswith("@") else path
        self.sock.bind(bind_to)
        self.sock.settimeout(0.2)
        self.messages: List[str] = []
        self.cursor = 0  # wait_for looks at messages from here on

    def drain(self, until: float = 0.0) -> List[str]:
        end = time.monotonic() + until
        while True:
            try:
                self.messages.append(self.sock.recv(65536).decode())
            except socket.timeout:
                if time.monotonic() >= end:
                    return self.messages
                continue
            if time.monotonic() >= end + 0.5:  # a steady stream of pings must not hold us
                return self.messages

    def wait_for(self, needle: str, timeout: float = 10.0) -> str:
        """The first message holding `needle` after the one the previous wait found."""
        end = time.monotonic() + timeout
        while True:
            messages = self.drain()
            for index in range(self.cursor, len(messages)):
                if needle in messages[index].split("\n"):
                    self.cursor = index + 1
                    return messages[index]
            if time.monotonic() >= end:
                raise AssertionError(f"{needle!r} not received; got {self.messages}")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[Manager]:
    sock = Manager(str(tmp_path / "notify.sock"))
    yield sock
    sock.close()


def test_plain_protocol_sends_each_state(manager: Manager) -> None:
    notifier = Notifier(manager.path)
    assert notifier.enabled
    notifier.ready("polling every 5 s; no notice")
    notifier.status("polling every 5 s; no notice")  # unchanged: not sent again
    notifier.watchdog()
    notifier.status("last poll failed:\ntimeout")
    notifier.reloading()
    notifier.reloaded("config reloaded")
    notifier.stopping()
    notifier.close()
    got = manager.drain(0.3)
    assert got[0] == "READY=1\nSTATUS=polling every 5 s; no notice"
    assert got[1] == "WATCHDOG=1"
    assert got[2] == "STATUS=last poll failed: timeout"  # one line: STATUS= ends at a newline
    lines = got[3].split("\n")
    assert lines[0] == "RELOADING=1" and lines[1].startswith("MONOTONIC_USEC=")
    assert int(lines[1].split("=")[1]) > 0
    assert got[4] == "READY=1\nSTATUS=config reloaded"
    assert got[5].startswith("STOPPING=1\nSTATUS=")
    assert len(got) == 6


def test_abstract_namespace_address() -> None:
    name = f"@spotwatch-test-{os.getpid()}"
    sock = Manager(name)
    try:
        notifier = Notifier(name)
        notifier.watchdog()
        assert sock.drain(0.2) == ["WATCHDOG=1"]
    finally:
        sock.close()


def test_no_socket_is_a_quiet_no_op(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier()
    assert not notifier.enabled and notifier.send("READY=1") is False
    gone = Notifier(str(tmp_path / "nobody-listens"))
    assert gone.send("READY=1") is False  # never raises


def test_watchdog_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert Notifier().watchdog_interval() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", "1")
    assert Notifier().watchdog_interval() is None


def test_the_daemon_notifies_in_order(manager: Manager, tmp_path: Path) -> None:
    """A real `spotwatch run` with NOTIFY_SOCKET set: READY=1 (with the poll's STATUS) comes
    first, WATCHDOG=1 from every poll, RELOADING=1 then READY=1 around SIGHUP, STOPPING=1 last
    on SIGTERM, and the exit status is 0."""
    with ImdsSimulator() as imds:
        config = tmp_path / "config.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "poll_interval": "200ms",
                    "state_dir": str(tmp_path / "state"),
                    "imds": {"endpoint": imds.endpoint, "timeout": "300ms", "user_data": False},
                    "ecs": {"enabled": False},
                    "log": {"format": "text"},
                }
            )
        )
        config.chmod(0o600)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SPOTWATCH_", "WATCHDOG"))}
        env.update(NOTIFY_SOCKET=manager.path, PYTHONPATH=str(REPO))
        process = subprocess.Popen(
            [sys.executable, "-m", "spotwatch", "run", "-c", str(config)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            ready = manager.wait_for("READY=1")
            assert "STATUS=polling every 0.2 s; no notice" in ready.split("\n")
            manager.wait_for("WATCHDOG=1")
            process.send_signal(signal.SIGHUP)
            manager.wait_for("RELOADING=1")
            manager.wait_for("READY=1")
            process.send_signal(signal.SIGTERM)
            manager.wait_for("STOPPING=1")
            assert process.wait(10) == 0
        finally:
            if process.poll() is None:
                process.kill()
            stderr = process.communicate()[1].decode(errors="replace")
    got = manager.drain(0.2)
    kinds = [m.split("\n")[0].split("=")[0] for m in got if m != "WATCHDOG=1"]
    assert kinds[0] == "READY", got
    assert got.index(next(m for m in got if m.startswith("WATCHDOG=1"))) > 0
    reloading = kinds.index("RELOADING")
    assert kinds[reloading + 1] == "READY", kinds  # back to ready after the reload
    assert kinds[-1] == "STOPPING", kinds
    assert "Traceback" not in stderr


def test_status_says_responding_only_while_the_response_runs(
    manager: Manager, tmp_path: Path
) -> None:
    """The notice keeps showing in IMDS after the hooks are done: STATUS= must then stop
    saying "responding" and say the response is done."""
    from datetime import datetime, timedelta, timezone

    from spotwatch.simulator.imds import format_time

    with ImdsSimulator() as imds:
        notice_time = format_time(datetime.now(timezone.utc) + timedelta(seconds=60))
        imds.set_instance_action("terminate", notice_time)
        config = tmp_path / "config.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "poll_interval": "200ms",
                    "deadline_margin": "1s",
                    "state_dir": str(tmp_path / "state"),
                    "imds": {"endpoint": imds.endpoint, "timeout": "300ms", "user_data": False},
                    "ecs": {"enabled": False},
                    "hooks": [{"name": "checkpoint", "command": "sleep 1", "timeout": "10s"}],
                    "log": {"format": "text"},
                }
            )
        )
        config.chmod(0o600)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SPOTWATCH_", "WATCHDOG"))}
        env.update(NOTIFY_SOCKET=manager.path, PYTHONPATH=str(REPO))
        process = subprocess.Popen(
            [sys.executable, "-m", "spotwatch", "run", "-c", str(config)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            manager.wait_for(f"STATUS=terminate notice for {notice_time}; responding")
            manager.wait_for(f"STATUS=terminate notice for {notice_time}; response done")
        finally:
            process.terminate()
            process.wait(20)
    statuses = [
        line for m in manager.drain(0.2) for line in m.split("\n") if line.startswith("STATUS=")
    ]
    done_at = statuses.index(f"STATUS=terminate notice for {notice_time}; response done")
    assert not any("responding" in s for s in statuses[done_at:]), statuses
