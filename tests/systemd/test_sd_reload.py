"""`spotwatch reload --pid PID` (the unit's ExecReload) against a real `spotwatch run`: it
returns only once the daemon has answered, 0 when the new config is in force, 78 naming the
problem when the daemon refused it (and kept the old one), 1 when nobody answers."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

import pytest
import yaml
from testkit import REPO, DaemonProcess, child_env, wait_for

from spotwatch.simulator.imds import ImdsSimulator


class Setup:
    def __init__(self, tmp_path: Path, imds: ImdsSimulator, *, under_unit: bool = True) -> None:
        self.config = tmp_path / "config.yaml"
        self.state = tmp_path / "state"
        self.imds = imds
        self.write({})
        # As under the unit (RuntimeDirectory=spotwatch): both sides get the folder.
        runtime = tmp_path / "run"
        runtime.mkdir(mode=0o700)
        self.env = child_env({"RUNTIME_DIRECTORY": str(runtime)} if under_unit else {})
        self.daemon = DaemonProcess(self.config, tmp_path / "daemon.log", env=self.env)

    def write(self, extra: Dict[str, Any]) -> None:
        config = {
            "poll_interval": "200ms",
            "state_dir": str(self.state),
            "imds": {"endpoint": self.imds.endpoint, "timeout": "300ms", "user_data": False},
            "ecs": {"enabled": False},
            "log": {"format": "text"},
            **extra,
        }
        self.config.write_text(yaml.safe_dump(config))
        self.config.chmod(0o600)

    def reload(
        self, pid: Optional[int] = None, timeout: str = "20"
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "spotwatch", "reload", "-c", str(self.config),
             "--pid", str(pid or self.daemon.process.pid), "--timeout", timeout],
            env=self.env, cwd=str(REPO), capture_output=True, text=True, timeout=60,
        )  # fmt: skip


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    with ImdsSimulator() as imds:
        it = Setup(tmp_path, imds)
        try:
            wait_for(lambda: (it.state / "poll.json").exists(), 15)
            yield it
        finally:
            assert it.daemon.stop() == 0, it.daemon.log()


def test_a_good_config_is_in_force_when_reload_returns(setup: Setup) -> None:
    setup.write({"poll_interval": "300ms"})
    done = setup.reload()
    assert done.returncode == 0, done.stderr
    assert "config reloaded from" in done.stdout
    # the answer came from the daemon itself, after it applied the file
    assert "reloaded" in setup.daemon.log()


def test_a_refused_config_fails_the_reload_naming_the_key(setup: Setup) -> None:
    setup.write({"hooks": [{"name": "x", "command": "true", "timeout": "soon"}]})
    done = setup.reload()
    assert done.returncode == 78, (done.stdout, done.stderr)
    assert "hooks[0].timeout" in done.stderr
    assert "old config kept" in done.stderr
    assert setup.daemon.process.poll() is None  # still running, on the old config
    setup.write({})
    assert setup.reload().returncode == 0  # and a fixed file is taken up afterwards


def test_without_systemd_the_answer_is_in_the_state_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`spotwatch run` started by hand: no RUNTIME_DIRECTORY, so both sides use state_dir."""
    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    with ImdsSimulator() as imds:
        it = Setup(tmp_path, imds, under_unit=False)
        try:
            wait_for(lambda: (it.state / "poll.json").exists(), 15)
            done = it.reload()
            assert done.returncode == 0, done.stderr
            assert (it.state / "reload-reply.json").stat().st_mode & 0o077 == 0  # root only
        finally:
            assert it.daemon.stop() == 0


def test_a_daemon_that_never_answers_fails_the_reload(setup: Setup) -> None:
    setup.daemon.send(signal.SIGSTOP)  # frozen: SIGHUP stays pending
    try:
        done = setup.reload(timeout="1")
    finally:
        setup.daemon.send(signal.SIGCONT)
    assert done.returncode == 1
    assert "did not answer within 1 s" in done.stderr


def test_no_such_daemon() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "spotwatch", "reload", "--pid", "999999999"],
        env=child_env(), cwd=str(REPO), capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 1
    assert "999999999" in done.stderr
