"""Suite-wide: every test starts with the `spotwatch` logger as the logging module made it;
`moto_url`, moto's server over real HTTP, one per test module that asks for it.

`spotwatch.host.logs.configure` (run by in-process daemons and rehearsals) gives the
logger handlers of its own and stops propagation; left that way, a later test's `caplog`
would see nothing, and which test passed would depend on the order they ran in.
"""

from __future__ import annotations

import logging
from typing import Iterator

import pytest


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
    from moto.server import ThreadedMotoServer  # only for the modules that use it

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
