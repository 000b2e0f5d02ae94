"""Faster detection while a rebalance recommendation stands, measured on the real daemon.

With `poll_interval: 5s` and `rebalance.poll_interval: 1s` (the default), the daemon polls
spot/instance-action every 1 s from the poll that sees a recommendation until a notice comes,
the recommendation is gone or an hour has passed since it was issued (`wanted_interval` in
spotwatch/daemon/pollview.py). Measured here, each part against a simulator process of its own
and all three at once (each daemon's CPU is its own threads'):

- CPU per poll and RSS in that mode: one daemon, a recommendation standing and no notice,
  read at poll-count checkpoints (bench/cadence.py).
- Detection delay, notice raised → first hook started (the hook writes bash's
  `$EPOCHREALTIME`), with the recommendation standing (fast mode) and without it (normal
  mode), the config otherwise the same. A fresh daemon per trial: after a notice the daemon
  polls every `poll_interval` again until the notice has been gone for 3 polls, so one daemon
  would take ~15 s to come back to the fast mode. Each trial waits until the daemon polls in
  its mode (fast: its second poll, checked to come within 1.5 s of the first; normal: its
  first), then raises a terminate notice at a random phase of that mode's interval.
"""

from __future__ import annotations

import random
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Sequence, Tuple

from bench.cadence import Watch, follow, recommend_now
from bench.common import (
    INSTANCE_ACTION,
    DaemonProcess,
    Results,
    SimProcess,
    percentile,
    read_lines,
    wait_until,
)
from bench.detection import STAMP, _answered, _time_text

BASE = 5.0  # poll_interval
FAST = 1.0  # rebalance.poll_interval
SETTINGS: Dict[str, Any] = {
    "rebalance": {"enabled": True, "poll_interval": f"{FAST:g}s"},
    "hooks": [
        {
            "name": "stamp",
            "command": ["/bin/bash", "-c", STAMP.format(path="@DIR@/marks")],
            "actions": ["terminate"],
            "timeout": "10s",
        }
    ],
}


def _polls(sim: SimProcess, since: float) -> List[float]:
    """Monotonic times of the GETs of spot/instance-action answered after `since`."""
    return [row[0] for row in sim.log(since) if row[2] == "GET" and row[3] == INSTANCE_ACTION]


def _trial(sim: SimProcess, rng: random.Random, fast: bool) -> Tuple[float, float]:
    """(raised → hook, answered → hook) in ms, with a fresh daemon."""
    interval, polls = (FAST, 2) if fast else (BASE, 1)
    daemon = DaemonProcess(sim.endpoint, SETTINGS, poll_interval=f"{BASE:g}s")
    marks = daemon.path("marks")
    daemon.start()
    try:
        wait_until(
            lambda: len(_polls(sim, daemon.started)) >= polls,
            30,
            "the daemon's polls",
            pause=0.02,
        )
        seen = _polls(sim, daemon.started)
        if fast and seen[1] - seen[0] > 1.5 * FAST:
            raise RuntimeError(f"not in the fast mode: polls {seen[1] - seen[0]:.2f} s apart")
        time.sleep(rng.uniform(0, interval))
        raised = sim.call("raise", action="terminate", time=_time_text(120))
        wait_until(lambda: read_lines(marks), 10 + 2 * BASE, "the hook")
        daemon.check_alive()
        action, stamp = read_lines(marks)[0].split()
        if action != "terminate":
            raise RuntimeError(f"the hook ran for {action}")
        hook = float(stamp)
        answered = _answered(sim, raised["mono"])
        return (hook - raised["real"]) * 1000, (hook - answered) * 1000
    finally:
        daemon.cleanup()
        sim.call("clear")


def trials(count: int, fast: bool, seed: int) -> List[Tuple[float, float]]:
    rng = random.Random(seed)
    sim = SimProcess()
    try:
        if fast:
            recommend_now(sim)
        return [_trial(sim, rng, fast) for _ in range(count)]
    finally:
        sim.close()


def run(results: Results, checkpoints: Sequence[int], fast_trials: int, slow_trials: int) -> None:
    watch = Watch(FAST, checkpoints, SETTINGS, poll_interval=BASE, recommendation=True)
    with ThreadPoolExecutor(3) as pool:
        cpu = pool.submit(follow, [watch])
        slow = pool.submit(trials, slow_trials, False, 11)
        fast = pool.submit(trials, fast_trials, True, 12)
        cpu.result()
        modes = {"fast": fast.result(), "normal": slow.result()}
    mode = f"poll_interval {BASE:g} s, rebalance.poll_interval {FAST:g} s"
    results.add(
        "rebalance",
        f"CPU per poll, recommendation standing ({mode}; {watch.span()})",
        "ms",
        watch.per_poll_ms(),
    )
    results.add("rebalance", f"RSS, recommendation standing ({watch.span()})", "MB", watch.rss())
    for name, what in (
        ("fast", f"recommendation standing: polls every {FAST:g} s"),
        ("normal", f"no recommendation: polls every {BASE:g} s"),
    ):
        delays = [absolute for absolute, _ in modes[name]]
        results.add(
            "rebalance",
            f"notice raised → first hook started, {what}; random phase, a fresh daemon a trial",
            "ms",
            delays,
            p99=percentile(delays, 99),
            note=f"mean {sum(delays) / len(delays):.0f}",
        )
    overhead = [own for _, own in modes["fast"] + modes["normal"]]
    results.add(
        "rebalance",
        "our overhead: answer carrying the notice → first hook started (both modes, fresh daemons)",
        "ms",
        overhead,
        p99=percentile(overhead, 99),
    )
