"""The monitoring kit's files, promtool, and the check shared by the dashboard's and the
rules' tests: every metric name they query is one the real daemon exports."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Dict, Iterable, Set

import pytest

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "monitoring" / "grafana" / "spotwatch.json"
RULES = REPO / "monitoring" / "prometheus" / "spotwatch-rules.yml"
RULE_TESTS = Path(__file__).resolve().parent / "spotwatch-rules.test.yml"

def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool is not installed (scripts/test installs Debian's prometheus)")
    return found


def check_exported(queried: Iterable[str], exported: Dict[str, str], what: str) -> None:
    missing: Set[str] = set(queried) - set(exported)
    assert not missing, f"{what} query names the daemon does not export: {sorted(missing)}"
