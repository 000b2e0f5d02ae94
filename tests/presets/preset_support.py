"""Helpers for the preset tests: hooks made through the product's own config checks, step
contexts on a real `NoticeClock`, and recording stand-ins for CLI tools (a real program that
appends its argv and environment, as JSON, to a file)."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional

from testkit import wait_for

from spotwatch.config.schema import HookSpec
from spotwatch.config.validate import check_layer
from spotwatch.detection.notices import Notice
from spotwatch.presets.base import BareServices, Services
from spotwatch.response.deadline import NoticeClock
from spotwatch.response.plan import StepContext, StepOutcome
from spotwatch.response.presetstep import PresetStep

INSTANCE_ID = "i-0123456789abcdef0"


def preset_hook(preset: str, arguments: Optional[Dict[str, Any]] = None, **fields: Any) -> HookSpec:
    """A hook as the config loader makes it from `{name, preset, with, ...}`."""
    raw: Dict[str, Any] = {"name": fields.pop("name", "p"), "preset": preset, **fields}
    if arguments is not None:
        raw["with"] = arguments
    checked, problems = check_layer({"hooks": [raw]})
    assert problems == [], problems
    hook: HookSpec = checked["hooks"][0]
    return hook


def notice(seconds: float, action: str = "terminate", source: str = "instance-action") -> Notice:
    """A notice `seconds` from now, written the way IMDS writes it (whole seconds)."""
    moment = datetime.fromtimestamp(int(time.time() + seconds), timezone.utc)
    return Notice(action, moment, moment.strftime("%Y-%m-%dT%H:%M:%SZ"), source)


def context(
    seconds_to_deadline: float = 60.0,
    *,
    margin: float = 10.0,
    action: str = "terminate",
    source: str = "instance-action",
    dry_run: bool = False,
) -> StepContext:
    """A context whose deadline (notice time - margin) is about `seconds_to_deadline` away."""
    clock = NoticeClock(notice(seconds_to_deadline + margin + 0.999, action, source), margin)
    return StepContext(clock=clock, instance_id=INSTANCE_ID, dry_run=dry_run)


def per_hook_context(action: str = "cancel", source: str = "scheduled-event") -> StepContext:
    """A response with no deadline of its own (cancel, start): each hook gets its timeout."""
    clock = NoticeClock.budget(notice(0, action, source), 3600.0, per_hook=True)
    return StepContext(clock=clock, instance_id=INSTANCE_ID, dry_run=False)


def run_step(
    hook: HookSpec, ctx: StepContext, services: Optional[Services] = None
) -> StepOutcome:
    return PresetStep(hook, services or BareServices()).run(ctx)


def recorder(folder: Path, name: str, *, exit_code: int = 0, sleep: float = 0.0) -> Path:
    """A stand-in program `folder/name` that appends one JSON line per run to
    `folder/name.calls`: its argv (without the program) and its environment."""
    program = folder / name
    calls = folder / f"{name}.calls"
    program.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys, time\n"
        f"with open({str(calls)!r}, 'a') as out:\n"
        "    out.write(json.dumps({'argv': sys.argv[1:], 'env': dict(os.environ)}) + '\\n')\n"
        f"time.sleep({sleep})\n"
        "print('stand-in ran', *sys.argv[1:])\n"
        f"sys.exit({exit_code})\n"
    )
    program.chmod(program.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return program


def calls(program: Path) -> List[Dict[str, Any]]:
    path = Path(f"{program}.calls")
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


class FixedServices(BareServices):
    """Services whose node name is given (the host's is not the test's to choose)."""

    def __init__(self, node: str = "ip-10-0-0-10.ec2.internal") -> None:
        self.node = node

    def node_name(self) -> str:
        return self.node


# Traps SIGUSR1 (and SIGTERM): writes which arrived and when, "saves" for SAVE seconds,
# writes when it exits, exits 0.
TRAINER = """
import os, signal, sys, time
log, save = sys.argv[1], float(sys.argv[2])
def handler(signum, frame):
    with open(log, "a") as out:
        out.write(f"{signal.Signals(signum).name} {time.time()}\\n")
    time.sleep(save)
    with open(log, "a") as out:
        out.write(f"exit {time.time()}\\n")
    sys.exit(0)
signal.signal(signal.SIGUSR1, handler)
signal.signal(signal.SIGTERM, handler)
with open(log, "a") as out:
    out.write("ready\\n")
while True:
    time.sleep(60)
"""


class Trainer:
    def __init__(self, folder: Path, save: float = 0.0) -> None:
        self.log = folder / "trainer.log"
        self.process = subprocess.Popen(
            [sys.executable, "-c", TRAINER, str(self.log), str(save)]
        )
        self.pidfile = folder / "trainer.pid"
        self.pidfile.write_text(f"{self.process.pid}\n")
        wait_for(lambda: self.log.exists() and "ready" in self.log.read_text())

    def signals(self) -> List[str]:
        """The signals it got, in order."""
        return [line.split()[0] for line in self.log.read_text().splitlines()[1:]
                if not line.startswith("exit ")]  # fmt: skip

    def when(self, what: str) -> float:
        """The wall time it wrote `what` (a signal's name, or "exit")."""
        found = [line for line in self.log.read_text().splitlines() if line.startswith(what)]
        return float(found[0].split()[1])
