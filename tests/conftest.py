"""Suite-wide: every test starts with the `spotwatch` logger as the logging module made it,
and no test reaches the machine's own system bus; `moto_url`, moto's server over real HTTP,
one per test module that asks for it.

`spotwatch.host.logs.configure` (run by in-process daemons and rehearsals) gives the
logger handlers of its own and stops propagation; left that way, a later test's `caplog`
would see nothing, and which test passed would depend on the order they ran in.

Every daemon takes logind's shutdown delay lock when logind answers (CONTRACT §8): on a
machine with a system bus that would be the machine's own logind. DBUS_SYSTEM_BUS_ADDRESS
(which spotwatch honours anyway) names a socket that is not there, for this process and
every child it starts; tests/logind points it at a dbus-daemon of its own.

Also `dockerd`: a real Docker daemon for the session, for any test folder that needs one.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import pytest
from dockerworld import DockerUnavailable, DockerWorld
from testkit import config_file, moto_server

from spotwatch.simulator.imds import ImdsSimulator

NO_SYSTEM_BUS = "unix:path=/nonexistent/spotwatch-tests/no-system-bus"
os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = NO_SYSTEM_BUS


@pytest.fixture(autouse=True)
def _pristine_spotwatch_logger() -> Iterator[None]:
    logger = logging.getLogger("spotwatch")
    yield
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    logger.setLevel(logging.NOTSET)
    logger.propagate = True


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    """moto's server (every AWS service) on 127.0.0.1, for one test module."""
    yield from moto_server()


@pytest.fixture
def imds() -> Iterator[ImdsSimulator]:
    """A simulated IMDS on a free loopback port (folders with needs of their own override it)."""
    with ImdsSimulator() as simulator:
        yield simulator


@pytest.fixture
def write_config(tmp_path: Path, imds: ImdsSimulator) -> Callable[..., Path]:
    """Write tmp_path/config.yaml against the simulator (fast polls, no ECS, no user data,
    state in tmp_path/state); returns its path."""

    def write(hooks: Optional[List[Dict[str, Any]]] = None, **overrides: Any) -> Path:
        path = tmp_path / "config.yaml"
        return config_file(path, imds.endpoint, tmp_path / "state", hooks, **overrides)

    return write


@pytest.fixture(scope="session")
def dockerd() -> Iterator[DockerWorld]:
    """A real dockerd of the test session's own (tests/dockerworld.py: ~1 s to start and
    import its image here), shared by every test that asks for it, stopped by its PID at
    the end. Skips, saying why, only where no dockerd can be started."""
    try:
        world = DockerWorld.start()
    except DockerUnavailable as why:
        pytest.skip(f"no Docker daemon: {why}")
    try:
        yield world
    finally:
        world.close()
