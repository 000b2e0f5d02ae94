"""Helpers for service tests: waiting, reading hook output and state, the daemon as a child."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict

from testkit import DaemonProcess, lines, wait_for  # noqa: F401 - shared helpers, re-exported

REPO = Path(__file__).resolve().parents[2]


def state(workdir: Path) -> Dict[str, Any]:
    data = json.loads((workdir / "state" / "state.json").read_text())
    assert isinstance(data, dict)
    return data


def counter_hook(
    name: str, out: Path, *, order: int = 0, sleep: float = 0.0, **extra: Any
) -> Dict[str, Any]:
    """A hook that appends '<name> <action> <source>' to `out`, optionally sleeping after."""
    script = f'echo "{name} $SPOTWATCH_ACTION $SPOTWATCH_SOURCE" >> {out}'
    if sleep:
        script += f"; sleep {sleep}"
    return {"name": name, "command": script, "order": order, **extra}
