"""The ready-made hooks on the booted machine (run from boot_scenario.scenario; asserted in
test_boot.py): a rebalance recommendation runs a `signal` preset against a real unit's main
process (systemd tells its MainPID) and a `systemd-stop` preset stopping two real units at
once. Costs the boot test about 3 s."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict

import yaml

LOG = "/var/tmp/presets.log"
# A trainer that checkpoints on SIGUSR1 (1 s), and workers that take 1 s to stop on SIGTERM.
TRAINER = f"""#!/bin/sh
trap 'echo "trainer USR1" >> {LOG}; sleep 1; echo "trainer saved" >> {LOG}; exit 0' USR1
echo "trainer up" >> {LOG}
while :; do sleep 0.1; done
"""
WORKER = f"""#!/bin/sh
say() {{ echo "$1 $2 $(date +%s.%N)" >> {LOG}; }}
trap 'say "$1" TERM; sleep 1; say "$1" done; exit 0' TERM
echo "$1 up" >> {LOG}
while :; do sleep 0.1; done
"""
UNIT = "[Unit]\nDescription=spotwatch boot test: {what}\n[Service]\nExecStart={start}\n"
UNITS = ("trainer.service", "worker-a.service", "worker-b.service")
HOOKS = [
    {"name": "trainer", "preset": "signal", "actions": ["rebalance"], "timeout": "20s",
     "with": {"unit": "trainer.service", "signal": "USR1", "wait": True}},
    {"name": "workers", "preset": "systemd-stop", "actions": ["rebalance"], "timeout": "20s",
     "with": {"units": ["worker-a.service", "worker-b.service"]}},
]  # fmt: skip


def install(root: Path) -> None:
    """Before boot: the programs and their units (not started: the scenario starts them)."""
    programs = root / "usr" / "local" / "bin"
    for name, text in (("trainer", TRAINER), ("worker", WORKER)):
        (programs / name).write_text(text)
        (programs / name).chmod(0o755)
    units = root / "etc" / "systemd" / "system"
    (units / "trainer.service").write_text(
        UNIT.format(what="a trainer", start="/usr/local/bin/trainer")
    )
    for worker in ("worker-a", "worker-b"):
        (units / f"{worker}.service").write_text(
            UNIT.format(what=worker, start=f"/usr/local/bin/worker {worker}")
        )


def presets_scenario(
    machine: Any,
    imds: Any,
    root: Path,
    facts: Dict[str, Any],
    *,
    configure: Callable[..., None],
    wait: Callable[[Callable[[], Any], float], Any],
) -> None:
    """Runs with the daemon active, on the scenario's own config (`configure()`), and
    leaves it so."""
    etc = root / "etc" / "spotwatch" / "config.yaml"
    began = time.monotonic()
    machine.run("systemctl", "start", *UNITS)
    trainer_pid = machine.show("trainer.service", "MainPID").get("MainPID")
    configure(hooks=yaml.safe_load(etc.read_text())["hooks"] + HOOKS)
    reloaded = machine.run("systemctl", "reload", "spotwatch.service")
    imds.set_rebalance(datetime.now(timezone.utc))

    state = root / "var" / "lib" / "spotwatch" / "state.json"

    def rebalance_steps() -> Dict[str, Any]:
        """The rebalance response's steps once both presets have ended (the terminate
        notice of earlier still stands, so `status` shows that one)."""
        try:
            responses = json.loads(state.read_text()).get("responses", {})
        except (OSError, ValueError):
            return {}
        for record in responses.values():
            if record.get("tracker") == "rebalance":
                steps = {s["name"]: s for s in record.get("steps", [])}
                ended = [steps.get(f"hook:{h['name']}", {}).get("ended") for h in HOOKS]
                return steps if all(ended) else {}
        return {}

    steps = wait(rebalance_steps, 40)
    log = root / "var" / "tmp" / "presets.log"
    facts["presets"] = {
        "reload_rc": reloaded.returncode,
        "trainer_pid": trainer_pid,
        "steps": steps,
        "log": log.read_text() if log.exists() else "",
        "active": {u: machine.run("systemctl", "is-active", u).stdout.strip() for u in UNITS},
    }
    imds.set_rebalance(None)
    configure()
    machine.run("systemctl", "reload", "spotwatch.service")
    facts["timings"]["presets"] = time.monotonic() - began
