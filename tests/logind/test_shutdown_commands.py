"""`shutdown:` in the commands: what `check` says of logind, `enabled: true` refused (78)
where the lock cannot be had, `auto` off without the library (said once), and
`rehearse --action shutdown`, which takes no lock. Every command is a child process."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import jeepney
from logindsupport import LogindStandIn, hook_runs, timed_hook
from testkit import REPO, DaemonProcess, child_env, spotwatch, wait_for


def checks(config: Path, env: Dict[str, str]) -> Dict[str, Dict[str, str]]:
    result = spotwatch("check", "-c", str(config), "--json", env=env)
    assert result.returncode in (0, 1), result.stdout + result.stderr
    return {c["name"]: c for c in json.loads(result.stdout)["checks"]}


def test_check_warns_when_logind_lets_a_shutdown_go_sooner_than_the_budget(
    write_config, on_bus, daemons, logind: LogindStandIn
) -> None:
    """logind's InhibitDelayMaxUSec of 5 s against shutdown.budget 60 s is a warning naming
    both; 90 s is fine. The lock shows as not held until a daemon runs, then as held."""
    config = write_config()
    logind.delay_max = 5.0
    found = checks(config, on_bus)
    assert found["shutdown:delay"]["status"] == "warning"
    assert "5 s" in found["shutdown:delay"]["detail"]
    assert "60 s" in found["shutdown:delay"]["detail"]
    assert found["shutdown:lock"]["status"] == "warning"
    assert "not held" in found["shutdown:lock"]["detail"]

    logind.delay_max = 90.0
    daemon = daemons(config)
    logind.wait_for(lambda li: li.held())
    found = checks(config, on_bus)
    assert found["shutdown:delay"]["status"] == "ok"
    assert found["shutdown:lock"]["status"] == "ok"
    assert f"pid {daemon.process.pid}" in found["shutdown:lock"]["detail"]


def test_enabled_true_without_a_system_bus_fails_run_and_check_with_78(
    tmp_path, write_config
) -> None:
    """`shutdown.enabled: true` where no bus answers: run and check exit 78, naming the key
    and the cause."""
    config = write_config(shutdown={"enabled": True})
    env = child_env({"DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={tmp_path / 'no-bus'}"})
    for command in (["run"], ["check"]):
        result = spotwatch(*command, "-c", str(config), env=env)
        assert result.returncode == 78, result.stderr
        assert "shutdown.enabled: true, but no system bus at" in result.stderr
        assert "Traceback" not in result.stderr


def test_enabled_true_with_a_bus_but_no_logind_fails_with_78(write_config, on_bus) -> None:
    """A bus that answers, but nobody owns org.freedesktop.login1 on it: 78 as well."""
    config = write_config(shutdown={"enabled": True})
    result = spotwatch("run", "-c", str(config), env=on_bus)
    assert result.returncode == 78
    assert "logind is not on the system bus" in result.stderr


def without_jeepney(tmp_path: Path, on_bus: Dict[str, str]) -> Tuple[List[str], Dict[str, str]]:
    """A Python that has every installed package but jeepney: `-S` (no site-packages), and
    PYTHONPATH naming this checkout and a folder of links to everything else installed."""
    site_packages = Path(jeepney.__file__).resolve().parents[1]
    folder = tmp_path / "site-without-jeepney"
    folder.mkdir()
    for entry in site_packages.iterdir():
        if not entry.name.lower().startswith("jeepney"):
            (folder / entry.name).symlink_to(entry)
    env = dict(on_bus, PYTHONPATH=f"{REPO}:{folder}")
    return [sys.executable, "-S", "-m", "spotwatch"], env


def test_without_the_library_auto_is_off_and_says_so_once_and_true_is_78(
    tmp_path, write_config, on_bus, logind: LogindStandIn
) -> None:
    """No jeepney (a logind on the bus all the same): `auto` runs without the lock and says
    so in one line, whatever it goes on to do; `true` is refused with 78 naming jeepney."""
    python, env = without_jeepney(tmp_path, on_bus)
    config = write_config()
    daemon = DaemonProcess(config, tmp_path / "daemon.log", env=env, program=[*python, "run"])
    try:
        wait_for(lambda: "shutdown.enabled auto: off" in daemon.log(), 15)
        daemon.send(signal.SIGHUP)  # a reload with the same settings says nothing new
        wait_for(lambda: "config reloaded" in daemon.log(), 15)
    finally:
        assert daemon.stop() == 0
    said = [line for line in daemon.log().splitlines() if "shutdown.enabled auto: off" in line]
    assert len(said) == 1 and "the jeepney library is not installed" in said[0]
    assert logind.calls.seen == []

    refused = DaemonProcess(
        write_config(shutdown={"enabled": True}),
        tmp_path / "refused.log",
        env=env,
        program=[*python, "run"],
    )
    try:
        assert refused.process.wait(30) == 78
    finally:
        refused.stop(signal.SIGKILL)
    assert "shutdown.enabled: true, but the jeepney library is not installed" in refused.log()


def test_rehearse_shutdown_runs_the_shutdown_hooks_and_takes_no_lock(
    tmp_path, write_config, on_bus, logind: LogindStandIn
) -> None:
    """`rehearse --action shutdown`: a simulated announcement gets the configured shutdown
    response (hooks really run, labelled rehearsal); logind, reachable, is never asked."""
    out = tmp_path / "hooks.log"
    config = write_config([timed_hook(tmp_path, "checkpoint", out, actions=["shutdown"])])
    result = spotwatch("rehearse", "--action", "shutdown", "-c", str(config), env=on_bus)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "shutdown announced (simulated: no lock is taken" in result.stdout
    assert "the shutdown would go on now: the shutdown response ended" in result.stdout
    assert "announced + shutdown.budget 60 s - deadline_margin 1 s" in result.stdout
    (run,) = hook_runs(out)
    assert (run.action, run.source) == ("shutdown", "rehearsal")
    assert logind.calls.seen == []
