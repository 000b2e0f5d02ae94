"""Fixtures for service tests: a simulated IMDS and the real daemon as a child process."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import pytest
import yaml
from service_support import DaemonProcess

from spotwatch.simulator.imds import ImdsSimulator


@pytest.fixture
def imds() -> Iterator[ImdsSimulator]:
    with ImdsSimulator() as simulator:
        yield simulator


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "state").mkdir()
    return tmp_path


@pytest.fixture
def write_config(workdir: Path, imds: ImdsSimulator) -> Callable[..., Path]:
    """Write a config pointing at the simulator with a fast poll; returns its path."""

    def write(hooks: Optional[List[Dict[str, Any]]] = None, **overrides: Any) -> Path:
        config: Dict[str, Any] = {
            "poll_interval": "200ms",
            "deadline_margin": "1s",
            "state_dir": str(workdir / "state"),
            "imds": {"endpoint": imds.endpoint, "timeout": "300ms"},
            "ecs": {"enabled": False},
            "hooks": hooks or [],
        }
        config.update(overrides)
        path = workdir / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    return write


@pytest.fixture
def daemons(workdir: Path) -> Iterator[Callable[..., DaemonProcess]]:
    started: List[DaemonProcess] = []

    def start(config_path: Path, *extra: str) -> DaemonProcess:
        daemon = DaemonProcess(config_path, workdir / "daemon.log", *extra)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.stop(signal.SIGKILL)
