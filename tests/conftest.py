"""Suite-wide: every test starts with the `spotwatch` logger as the logging module made it.

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
