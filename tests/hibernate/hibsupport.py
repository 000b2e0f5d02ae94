"""Helpers for the hibernate tests: the daemon and the sleep hook as real processes, the
daemon's host probes pointed into the test's folder (see probed_spotwatch.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml
from testkit import DaemonProcess, lines, response_record, wait_for  # noqa: F401 - re-exported

from spotwatch.parts.hibernate import Probes
from spotwatch.simulator.imds import format_time

REPO = Path(__file__).resolve().parents[2]


def in_seconds(seconds: float) -> str:
    return format_time(datetime.now(timezone.utc) + timedelta(seconds=seconds))


def read_json(path: Path) -> Dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def steps(state_dir: Path, monitor: str = "spot") -> Dict[str, Dict[str, Any]]:
    record = response_record(read_json(state_dir / "state.json"), monitor)
    return {s["name"]: s for s in record.get("steps", [])}


NO_SYSTEMD = "/bin/false"  # the systemctl stand-in: "unknown", never a sleep job
PROBED_SPOTWATCH = Path(__file__).with_name("probed_spotwatch.py")


def probes(root: Path, systemctl: str = NO_SYSTEMD) -> Probes:
    return Probes(root=str(root), systemctl=(systemctl,))


def probed_run(root: Path, systemctl: str = NO_SYSTEMD) -> List[str]:
    """The command that starts `spotwatch run` with its probes in `root`."""
    return [sys.executable, str(PROBED_SPOTWATCH), str(root), systemctl]


def write_config(
    path: Path, state_dir: Path, endpoint: str, hooks: List[Dict[str, Any]], **overrides: Any
) -> Path:
    config: Dict[str, Any] = {
        "poll_interval": "200ms",
        "deadline_margin": "1s",
        "state_dir": str(state_dir),
        "imds": {"endpoint": endpoint, "timeout": "300ms"},
        "ecs": {"enabled": False},
        "rebalance": {"enabled": False},
        "hooks": hooks,
    }
    config.update(overrides)
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def record_hook(name: str, out: Path, *, sleep: float = 0.0, actions: Any = None) -> Dict[str, Any]:
    """Appends '<name> <action> <source>' to `out` (then sleeps, if asked)."""
    script = f'echo "{name} $SPOTWATCH_ACTION $SPOTWATCH_SOURCE" >> {out}'
    if sleep:
        script += f"; sleep {sleep}"
    return {"name": name, "command": script, "actions": actions or ["hibernate"]}


def marker_command(out: Path) -> str:
    """A trigger command standing in for `systemctl hibernate`: appends a line to `out`."""
    return f'echo "trigger $SPOTWATCH_ACTION" >> {out}'


def sleep_hook_command(config: Path, phase: str, action: str = "hibernate") -> List[str]:
    return [sys.executable, "-m", "spotwatch", "sleep-hook", "-c", str(config), phase, action]


def run_sleep_hook(
    config: Path, phase: str, env: Dict[str, str], action: str = "hibernate"
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        sleep_hook_command(config, phase, action),
        env=env,
        cwd=str(REPO),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def ended_step(state_dir: Path, name: str, monitor: str = "spot") -> Dict[str, Any]:
    """Wait for step `name` to end; its record."""

    def ended() -> Optional[Dict[str, Any]]:
        step = steps(state_dir, monitor).get(name)
        return step if step and step.get("ended") else None

    value = wait_for(ended)
    assert isinstance(value, dict)
    return value
