"""Fixtures for the shutdown lock: a real dbus-daemon, a logind stand-in on it, a simulated
IMDS, and the daemon as a child process that reaches the bus through DBUS_SYSTEM_BUS_ADDRESS
(helpers the tests import are in logindsupport.py)."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional

import pytest
from logindsupport import LogindStandIn, PrivateBus, why_not
from testkit import DaemonProcess, child_env


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[PrivateBus]:
    reason = why_not()
    if reason:
        pytest.skip(reason)
    private = PrivateBus(tmp_path / "dbus")
    yield private
    private.stop()


@pytest.fixture
def logind(bus: PrivateBus) -> Iterator[LogindStandIn]:
    stand_in = LogindStandIn(bus.address)
    yield stand_in
    stand_in.stop()


@pytest.fixture
def on_bus(bus: PrivateBus) -> Dict[str, str]:
    """A child process's environment that finds the private bus as its system bus."""
    return child_env({"DBUS_SYSTEM_BUS_ADDRESS": bus.address})


@pytest.fixture
def daemons(tmp_path: Path, on_bus: Dict[str, str]) -> Iterator[Callable[..., DaemonProcess]]:
    started: List[DaemonProcess] = []

    def start(config: Path, *extra: str, env: Optional[Dict[str, str]] = None) -> DaemonProcess:
        daemon = DaemonProcess(config, tmp_path / "daemon.log", *extra, env=env or on_bus)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.stop(signal.SIGKILL)
