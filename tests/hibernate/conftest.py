"""Fixtures for the hibernate tests (helpers live in hibsupport.py)."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest
import testkit
from hibsupport import DaemonProcess, probed_run, write_config

from spotwatch.simulator.imds import ImdsSimulator


@pytest.fixture
def imds() -> Iterator[ImdsSimulator]:
    with ImdsSimulator() as simulator:
        yield simulator


@pytest.fixture
def hib(tmp_path: Path, imds: ImdsSimulator) -> Iterator[HibEnv]:
    env = HibEnv(tmp_path, imds)
    yield env
    for daemon in env.started:
        daemon.stop(signal.SIGKILL)


class HibEnv:
    """One test's world: a state dir, a fake filesystem root for the probes, a config."""

    def __init__(self, tmp_path: Path, imds: ImdsSimulator) -> None:
        self.dir = tmp_path
        self.imds = imds
        self.state = tmp_path / "state"
        self.root = tmp_path / "root"  # the daemon's probes look here: empty = no agent
        self.root.mkdir()
        self.config_path = tmp_path / "config.yaml"
        self.started: List[DaemonProcess] = []
        self.env = testkit.child_env()

    def config(self, hooks: Optional[List[Dict[str, Any]]] = None, **overrides: Any) -> Path:
        return write_config(
            self.config_path, self.state, self.imds.endpoint, hooks or [], **overrides
        )

    def daemon(self, *extra: str) -> DaemonProcess:
        daemon = DaemonProcess(
            self.config_path,
            self.dir / "daemon.log",
            *extra,
            env=self.env,
            program=probed_run(self.root),
        )
        self.started.append(daemon)
        return daemon

    def install_agent(self, relative: str = "usr/bin/hibinit-agent", text: str = "") -> None:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text or "#!/bin/sh\n")
        path.chmod(0o755)
