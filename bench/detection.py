"""Detection and hibernation latency of the real daemon (a child process) against the
simulator (another one).

Moments, all on the wall clock, taken where they happen:
- "raised": the simulator starts answering with the notice;
- "answered": the simulator answered the GET of spot/instance-action that carried it (its
  request log, monotonic, turned into wall time inside the simulator process);
- "hook started": the hook itself writes bash's `$EPOCHREALTIME` (no fork), so the hook's
  process start-up counts as ours.
Absolute latency (raised -> hook) is dominated by where the notice falls in the poll grid,
so each trial raises it at a random phase; the part that is spotwatch's own is answered ->
hook started. Trials alternate terminate and stop (a changed action is a new notice, so no
waiting for the old one to be forgotten).

Hibernate (formerly bench/hibernate.py, which measured in process from the poll handing the
notice over): answered -> the trigger command itself running, after quick hooks.
"""

from __future__ import annotations

import random
import time
from datetime import datetime, timedelta, timezone
from typing import Dict, List

from bench.common import INSTANCE_ACTION, DaemonProcess, SimProcess, read_lines, wait_until

STAMP = 'echo "$SPOTWATCH_ACTION $EPOCHREALTIME" >> {path}'


def _time_text(seconds_ahead: float) -> str:
    moment = datetime.now(timezone.utc) + timedelta(seconds=seconds_ahead)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _answered(sim: SimProcess, since: float) -> float:
    """Wall time of the first instance-action answer with a notice after `since`."""
    for _mono, real, method, path, status in sim.log(since):
        if method == "GET" and path == INSTANCE_ACTION and status == 200:
            return float(real)
    raise RuntimeError("no poll saw the notice")


def detection(
    sim: SimProcess, trials: int, interval: float, seed: int = 1
) -> Dict[str, List[float]]:
    """ms per trial: {"absolute": raised -> hook, "overhead": answered -> hook}."""
    rng = random.Random(seed)
    daemon = DaemonProcess(
        sim.endpoint,
        {
            "hooks": [
                {
                    "name": "stamp",
                    "command": ["/bin/bash", "-c", STAMP.format(path="@DIR@/marks")],
                    "actions": ["terminate", "stop"],
                    "timeout": "10s",
                }
            ],
            "rebalance": {"enabled": False},
        },
        poll_interval=f"{interval * 1000:g}ms",
    )
    marks = daemon.path("marks")
    out: Dict[str, List[float]] = {"absolute": [], "overhead": []}
    base = sim.count()
    daemon.start()
    try:
        wait_until(lambda: sim.count() > base, 30, "the daemon's first poll")
        for trial in range(trials):
            time.sleep(rng.uniform(0, interval))
            seen = len(read_lines(marks))
            raised = sim.call(
                "raise", action=("terminate", "stop")[trial % 2], time=_time_text(120)
            )
            wait_until(lambda n=seen: len(read_lines(marks)) > n, 10 + interval * 2, "the hook")
            daemon.check_alive()
            hook = float(read_lines(marks)[-1].split()[1])
            out["absolute"].append((hook - raised["real"]) * 1000)
            out["overhead"].append((hook - _answered(sim, raised["mono"])) * 1000)
        sim.call("clear")
    finally:
        daemon.cleanup()
    return out


def hibernate(sim: SimProcess, trials: int, hooks: int, seed: int = 2) -> List[float]:
    """ms per trial from the answered GET carrying a hibernate notice to the trigger command
    itself running, with `hooks` quick hooks (/bin/true) before it."""
    rng = random.Random(seed)
    interval = 0.1
    daemon = DaemonProcess(
        sim.endpoint,
        {
            "hooks": [
                {"name": f"quick{i}", "command": ["/bin/true"], "actions": ["hibernate"]}
                for i in range(hooks)
            ],
            "hibernate": {
                "trigger": "command",
                "command": ["/bin/bash", "-c", STAMP.format(path="@DIR@/triggered")],
            },
            "rebalance": {"enabled": False},
        },
        poll_interval=f"{interval * 1000:g}ms",
    )
    marks = daemon.path("triggered")
    out: List[float] = []
    base = sim.count()
    daemon.start()
    try:
        wait_until(lambda: sim.count() > base, 30, "the daemon's first poll")
        for trial in range(trials):
            time.sleep(rng.uniform(0, interval))
            seen = len(read_lines(marks))
            # A time of its own per trial: one notice's hibernation is triggered only once.
            raised = sim.call("raise", action="hibernate", time=_time_text(trial))
            wait_until(lambda n=seen: len(read_lines(marks)) > n, 20, "the hibernation trigger")
            daemon.check_alive()
            trigger = float(read_lines(marks)[-1].split()[1])
            out.append((trigger - _answered(sim, raised["mono"])) * 1000)
            sim.call("clear")
            # Absent for 3 polls: forgotten, so the next one is a new notice.
            polls = sim.count()
            wait_until(lambda p=polls: sim.count() >= p + 4, 10, "the notice to be forgotten")
    finally:
        daemon.cleanup()
    return out
