"""Suite-wide: every test starts with the `spotwatch` logger as the logging module made it.

`spotwatch.host.logs.configure` (run by in-process daemons and rehearsals) gives the
logger handlers of its own and stops propagation; left that way, a later test's `caplog`
would see nothing, and which test passed would depend on the order they ran in.

Also `dockerd`: a real Docker daemon for the session, for any test folder that needs one.
"""

from __future__ import annotations

import logging
from typing import Iterator

import pytest
from dockerworld import DockerUnavailable, DockerWorld


@pytest.fixture(autouse=True)
def _pristine_spotwatch_logger() -> Iterator[None]:
    logger = logging.getLogger("spotwatch")
    yield
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    logger.setLevel(logging.NOTSET)
    logger.propagate = True


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
