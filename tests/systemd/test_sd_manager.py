"""systemd/spotwatch.service under a real `systemd --user` manager (root only).

manager_scenario.py runs in private mount and PID namespaces (see its docstring): it starts
the manager, installs a copy of the real unit with ExecStart pointing at this checkout
(`python -m spotwatch run -c <tmp config>`), WatchdogSec=3s and RestartSec=1s instead of 30s
and 5s, its output in a file and no core dumps; every other directive, the hardening
included, is the shipped one. It drives it with systemctl against an IMDS simulator on
127.0.0.1 and reports what it saw as JSON; the promises are asserted here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict

import pytest

REPO = Path(__file__).resolve().parents[2]
SCENARIO = Path(__file__).with_name("manager_scenario.py")
MANAGER = "/lib/systemd/systemd"

pytestmark = pytest.mark.systemd


def _why_not() -> str:
    if os.geteuid() != 0:
        return "needs root (mount namespace, tmpfs on /run/systemd)"
    for tool in ("unshare", "systemctl", "mount"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if not os.access(MANAGER, os.X_OK):
        return f"no systemd manager at {MANAGER} (apt-get install systemd)"
    return ""


@pytest.fixture(scope="module")
def facts(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Any]:
    reason = _why_not()
    if reason:
        pytest.skip(reason)
    work = tmp_path_factory.mktemp("manager")
    command = [
        "unshare", "--mount", "--propagation", "private",
        "--pid", "--fork", "--mount-proc", "--kill-child",
        sys.executable, str(SCENARIO), str(REPO), str(work),
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOTWATCH_")}
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    if done.returncode != 0 and "unshare failed" in done.stderr:
        pytest.skip(f"cannot create namespaces here: {done.stderr.strip()[:200]}")
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert isinstance(result, dict)
    return result


def test_start_returns_after_ready_with_the_poll_status(facts: Dict[str, Any]) -> None:
    start = facts["start"]
    assert start["rc"] == 0, start["stderr"]
    # Type=notify: `systemctl start` came back only once READY=1 arrived, so the unit is
    # active at once (not "activating") and STATUS= tells the first poll's result.
    assert start["show"]["ActiveState"] == "active"
    assert start["show"]["SubState"] == "running"
    assert start["show"]["StatusText"] == "polling every 0.2 s; no notice"


def test_hooks_share_the_hosts_mount_namespace(facts: Dict[str, Any]) -> None:
    """No hardening option gives the service a mount namespace of its own, so a volume a
    hook mounts is visible to dockerd and the application."""
    assert facts["same_mount_namespace"] is True


def test_reload_applies_the_new_config(facts: Dict[str, Any]) -> None:
    reload = facts["reload"]
    assert reload["rc"] == 0
    assert reload["show"]["ActiveState"] == "active"  # READY=1 ended RELOADING=1
    assert reload["show"]["MainPID"] == facts["start"]["show"]["MainPID"]  # no restart
    assert "0.3 s" in reload["show"]["StatusText"]  # the new poll interval is in force
    assert "reloaded" in reload["events"]


def test_the_watchdog_restarts_a_frozen_daemon(facts: Dict[str, Any]) -> None:
    watchdog = facts["watchdog"]
    before, after = watchdog["before"], watchdog["after"]
    assert after["ActiveState"] == "active"
    assert after["MainPID"] not in ("0", before["MainPID"])
    assert int(after["NRestarts"]) == int(before["NRestarts"]) + 1
    assert watchdog["seconds"] < 12  # WatchdogSec=3s + RestartSec=1s + start-up
    assert "watchdog" in watchdog["results_seen"]  # it was the watchdog, not a crash
    # PYTHONFAULTHANDLER=1: the SIGABRT left the frozen process's stacks in the log
    assert "Fatal Python error: Aborted" in facts["daemon_log"]


def test_stop_during_a_hook_lets_it_finish_and_is_clean(facts: Dict[str, Any]) -> None:
    stop = facts["stop"]
    assert stop["hook_started"]
    # no restart (watchdog or crash) between the watchdog test and the stop
    assert stop["before"]["NRestarts"] == facts["watchdog"]["after"]["NRestarts"], stop
    assert stop["before"]["MainPID"] == facts["watchdog"]["after"]["MainPID"], stop
    assert stop["rc"] == 0, stop["stderr"]
    # KillMode=mixed: only the daemon got SIGTERM; it waited for the hook, which wrote its
    # end marker before the daemon (and so `systemctl stop`) finished. The hook outlived
    # WatchdogSec=3s meanwhile: STOPPING=1 ends watchdog supervision.
    assert stop["marker_when_stop_returned"] == "start\nend\n"
    assert stop["seconds"] >= 3.0  # most of the 5 s hook was still to run
    assert stop["show"]["ActiveState"] == "inactive"
    assert stop["show"]["Result"] == "success"
    assert stop["show"]["ExecMainStatus"] == "0"


def test_logs_reach_the_journal_with_structured_fields(facts: Dict[str, Any]) -> None:
    journal = facts["journal"]
    assert {"notice", "hook-start", "hook-end", "reloaded", "stopping"} <= set(journal["events"])
    notice = journal["notice"]
    assert notice["SPOTWATCH_ACTION"] == "terminate"
    assert notice["PRIORITY"] == "4"
    assert journal["hook"]["SPOTWATCH_HOOK"] == "checkpoint"
