"""`systemd-stop`: `systemctl stop` of all the units at once; the hook ends when every one is
inactive.

    with: {units: [trainer.service, batch.service]}

One `systemctl stop A B …` queues every stop job at once (systemd runs them in parallel,
honouring the units' own ordering) and returns when they have all finished; it runs as a
hook would, bounded by the hook's time. Then each unit's ActiveState is read back: `inactive`
(or `failed`: stopped, with a non-zero exit) counts as stopped, anything else makes the step
fail, naming the unit. A stop cut short by the hook's limit leaves systemd's jobs running (the
units still stop); the step is `timeout`, naming the units not yet inactive.
"""

from __future__ import annotations

import subprocess
from typing import Any, Dict, List, Mapping, Sequence

from spotwatch.config.checks import unique_list
from spotwatch.presets.base import (
    FAILED,
    OK,
    Call,
    ProgramPreset,
    Requirement,
    Result,
    find_program,
    unit_name,
)

QUERY_TIMEOUT = 5.0
STOPPED = frozenset({"inactive", "failed"})


class SystemdStop(ProgramPreset):
    name = "systemd-stop"
    summary = "systemctl stop of all the units at once; the hook ends when every one is inactive"
    program = "systemctl"
    arguments = {"units": unique_list(unit_name, "systemd unit names", non_empty=True)}
    required = ("units",)

    def commands(self, args: Mapping[str, Any], call: Call) -> List[List[str]]:
        return [[self.program, "stop", *args["units"]]]

    def run(self, args: Mapping[str, Any], call: Call) -> Result:
        stopped = super().run(args, call)
        states = active_states(args["units"])
        left = [f"{unit} {state}" for unit, state in states.items() if state not in STOPPED]
        shown = ", ".join(f"{unit} {state}" for unit, state in states.items())
        if stopped.status != OK:
            still = f"; not yet inactive: {', '.join(left)}" if left else ""
            return Result(stopped.status, stopped.detail + still)
        if left:
            return Result(FAILED, f"systemctl stop returned, but {', '.join(left)}")
        return Result(OK, f"stopped {shown} ({stopped.detail.rsplit(': ', 1)[-1]})")

    def requirements(self, args: Mapping[str, Any]) -> List[Requirement]:
        return [Requirement("program", self.program)] + [
            Requirement("unit", unit) for unit in args["units"]
        ]


PRESET = SystemdStop()


def active_states(units: Sequence[str]) -> Dict[str, str]:
    """Each unit's ActiveState, as systemd says now ("unknown" when it cannot be asked)."""
    found = find_program("systemctl")
    states = {unit: "unknown" for unit in units}
    if found.path is None:
        return states
    try:
        done = subprocess.run(
            [found.path, "show", "-p", "ActiveState", "--value", *units],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=QUERY_TIMEOUT,
        )
    except (OSError, subprocess.SubprocessError):
        return states
    # One value per unit, in order, each block ended by an empty line.
    values = [line.strip() for line in done.stdout.split("\n\n")]
    if done.returncode == 0 and len([v for v in values if v]) == len(units):
        states.update(zip(units, (v for v in values if v)))
    return states
