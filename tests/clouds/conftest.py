"""Fixtures for the other clouds: Google's and Azure's metadata simulators (real HTTP servers
on 127.0.0.1), a work folder, and the real daemon as a child process (helpers:
clouds_support.py)."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional

import pytest
from testkit import DaemonProcess

from spotwatch.clouds.azure.simulator import AzureMetadataSimulator
from spotwatch.clouds.gcp.simulator import GcpMetadataSimulator


@pytest.fixture
def gcp() -> Iterator[GcpMetadataSimulator]:
    with GcpMetadataSimulator() as simulator:
        yield simulator


@pytest.fixture
def azure() -> Iterator[AzureMetadataSimulator]:
    with AzureMetadataSimulator() as simulator:
        yield simulator


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "state").mkdir()
    return tmp_path


@pytest.fixture
def daemons(workdir: Path) -> Iterator[Callable[..., DaemonProcess]]:
    started: List[DaemonProcess] = []

    def start(config: Path, *extra: str, env: Optional[Dict[str, str]] = None) -> DaemonProcess:
        daemon = DaemonProcess(config, workdir / f"daemon{len(started)}.log", *extra, env=env)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.stop(signal.SIGKILL)
