"""Helpers for service tests: waiting, reading hook output and state, the daemon as a child."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict

from testkit import lines, wait_for  # noqa: F401 - shared helpers, re-exported

REPO = Path(__file__).resolve().parents[2]


class DaemonProcess:
    """`python -m spotwatch run` in a child process, its log in a file."""

    def __init__(self, config_path: Path, log_path: Path, *extra: str) -> None:
        self.config_path = config_path
        self.log_path = log_path
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SPOTWATCH_", "NOTIFY_"))}
        env["PYTHONPATH"] = str(REPO)
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "spotwatch", "run", "-c", str(config_path), *extra],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(REPO),
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def send(self, signum: int) -> None:
        self.process.send_signal(signum)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            code = self.process.wait(timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self._log.close()
        return code


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
