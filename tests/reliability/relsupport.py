"""Helpers for the reliability suites: run modes, a daemon in this process driven poll by
poll against the IMDS simulator, and the real daemon as a child process."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

import testkit
import yaml
from hypothesis import HealthCheck, settings
from testkit import (  # noqa: F401 - shared helpers, re-exported
    DaemonProcess,
    child_env,
    lines,
    wait_for,
)

REPO = Path(__file__).resolve().parents[2]

LONG = os.environ.get("SPOTWATCH_LONG", "") not in ("", "0")
"""`SPOTWATCH_LONG=1`: the long local mode (many more examples, polls and kill rounds)."""


def record_stats(suite: str, **counts: float) -> None:
    """Add to the running totals in `$SPOTWATCH_STATS` (a JSON file), when it is set: how the
    long runs' figures (examples, polls, faults) are gathered for the report."""
    path = os.environ.get("SPOTWATCH_STATS")
    if not path:
        return
    try:
        totals = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        totals = {}
    mine = totals.setdefault(suite, {})
    for key, value in counts.items():
        mine[key] = mine.get(key, 0) + value
    Path(path).write_text(json.dumps(totals, indent=1, sort_keys=True))


def suite_settings(ci_examples: int, long_examples: int, **extra: Any) -> settings:
    """Hypothesis settings for one test: bounded and derandomized (reproducible) in CI; many
    more, randomized examples in the long mode."""
    return settings(
        max_examples=long_examples if LONG else ci_examples,
        derandomize=not LONG,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        **extra,
    )


def write_config(path: Path, data: Dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data))
    path.chmod(0o600)
    return path


def base_config(
    state_dir: Path, endpoint: str, hooks: List[Dict[str, Any]], **extra: Any
) -> Dict[str, Any]:
    """testkit's config, with hibernation never triggered."""
    return testkit.base_config(
        state_dir, endpoint, hooks, **{"hibernate": {"trigger": "none"}, **extra}
    )


def append_hook(name: str, out: Path, actions: List[str], **extra: Any) -> Dict[str, Any]:
    """A hook that appends '<name> <action> <notice time>' to `out`."""
    script = f'echo "{name} $SPOTWATCH_ACTION $SPOTWATCH_NOTICE_TIME" >> {out}'
    return {"name": name, "command": script, "actions": actions, **extra}


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


class Clocks:
    """The daemon's (CLOCK_BOOTTIME, CLOCK_MONOTONIC) seam, with a sleep we can add."""

    def __init__(self) -> None:
        self.asleep = 0.0

    def __call__(self) -> Tuple[float, float]:
        now = time.monotonic()
        return now + self.asleep, now


class Captured(logging.Handler):
    """Every record of the `spotwatch` loggers, at every level, while in a `with` block."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: List[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def text(self) -> str:
        return "\n".join(r.getMessage() for r in self.records)

    def __enter__(self) -> Captured:
        logger = logging.getLogger("spotwatch")
        self._level = logger.level
        logger.setLevel(logging.DEBUG)
        logger.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logger = logging.getLogger("spotwatch")
        logger.removeHandler(self)
        logger.setLevel(self._level)


class ErrorRecords(logging.Handler):
    """Collects records that carry a traceback, or say something was unexpected or raised:
    the fingerprints of an exception that a safety net caught."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: List[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.exc_info or "unexpected" in message or " raised" in message:
            self.records.append(record)

    def texts(self) -> List[str]:
        return [f"{r.name}: {r.getMessage()}" for r in self.records]

    def __enter__(self) -> ErrorRecords:
        logging.getLogger("spotwatch").addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger("spotwatch").removeHandler(self)


