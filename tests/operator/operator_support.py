"""Helpers for the operator tests (a unique module name: tests/ has no packages)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import testkit
from testkit import wait_for  # noqa: F401 - shared helpers, re-exported

REPO = Path(__file__).resolve().parents[2]


def clean_env(**extra: str) -> Dict[str, str]:
    """The environment for a child spotwatch: no SPOTWATCH_*/NOTIFY_*/AWS IMDS variables."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SPOTWATCH_", "NOTIFY_", "AWS_EC2_METADATA"))
    }
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


def spotwatch(
    *args: str, timeout: float = 60.0, env: Optional[Dict[str, str]] = None, cwd: Any = None
) -> subprocess.CompletedProcess:
    """`python -m spotwatch ARGS` with this worktree's code; output captured as text."""
    return testkit.spotwatch(*args, timeout=timeout, env=env or clean_env(), cwd=cwd)


SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        assert isinstance(port, int)
        return port


def parse_metrics(text: str) -> Dict[Tuple[str, str], float]:
    """Prometheus text format: {(name, '{labels}' or ''): value}; fails on a bad line."""
    samples: Dict[Tuple[str, str], float] = {}
    for line in text.splitlines():
        if not line or line.startswith("# HELP ") or line.startswith("# TYPE "):
            continue
        match = SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        samples[(match.group(1), match.group(2) or "")] = float(match.group(3))
    return samples
