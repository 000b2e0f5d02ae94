"""Helpers every test folder uses (importable from any test: pytest puts tests/ on sys.path
for tests/conftest.py)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, List


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll `predicate` until it is truthy and return its value; fail the test on timeout."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


def lines(path: Path) -> List[str]:
    """A file's lines, or none while it does not exist yet (hooks append to such files)."""
    return path.read_text().splitlines() if path.exists() else []
