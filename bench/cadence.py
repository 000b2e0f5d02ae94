"""Idle cost at the cadences a fleet runs: CPU per poll and RSS of the real daemon polling
every 1 s and every 5 s (the 10 ms rows of bench/idle.py also count timer wake-ups that
never happen in production).

Each daemon is `python -m spotwatch run` (ECS off, no hooks, rebalance on: two GETs a poll,
and scheduled events once a minute) against a simulator process of its own, so its polls are
counted apart while the daemons run at once; its CPU is its own threads' time on CPU
(/proc/PID/task/*/schedstat). Each reading is taken half an interval after the simulator
has answered a checkpoint's count of polls: the poll before it is done and the next not yet
begun, so every window holds whole polls and start-up is left out.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from bench.common import (
    DaemonProcess,
    Results,
    SimProcess,
    median,
    rss_mb,
    thread_cpu_seconds,
)
from bench.idle import Sample, per_poll_ms


@dataclass
class Watch:
    """One daemon and its own simulator, read at poll-count checkpoints."""

    interval: float  # s: the daemon's poll interval while measured (readings fall mid-gap)
    checkpoints: Sequence[int]
    settings: Dict[str, Any] = field(default_factory=dict)
    poll_interval: Optional[float] = None  # the config's poll_interval (default: interval)
    recommendation: bool = False  # a rebalance recommendation stands from the start
    samples: List[Sample] = field(default_factory=list)

    def per_poll_ms(self) -> List[float]:
        return [per_poll_ms(a, b) for a, b in zip(self.samples, self.samples[1:])]

    def rss(self) -> List[float]:
        return [s.rss for s in self.samples[1:]]

    def span(self) -> str:
        return f"polls {self.checkpoints[0]}→{self.checkpoints[-1]}"


def recommend_now(sim: SimProcess) -> None:
    """A rebalance recommendation issued now (the daemon polls faster for an hour after)."""
    sim.call("rebalance", time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))


def follow(watches: Sequence[Watch]) -> None:
    """Start every watch's simulator and daemon, read each at its checkpoints, stop them."""
    started: List[Tuple[Watch, SimProcess, DaemonProcess]] = []
    try:
        for watch in watches:
            sim = SimProcess()
            if watch.recommendation:
                recommend_now(sim)
            seconds = watch.poll_interval or watch.interval
            daemon = DaemonProcess(sim.endpoint, watch.settings, poll_interval=f"{seconds:g}s")
            started.append((watch, sim, daemon.start()))
        _read_all(started)
    finally:
        for _, sim, daemon in started:
            daemon.cleanup()
            sim.close()


def _read_all(started: Sequence[Tuple[Watch, SimProcess, DaemonProcess]]) -> None:
    longest = max(w.interval * w.checkpoints[-1] for w, _, _ in started)
    give_up = time.monotonic() + 60 + 2 * longest
    due: Dict[int, float] = {}  # index -> when to read (half an interval after the poll)
    while any(len(w.samples) < len(w.checkpoints) for w, _, _ in started):
        now = time.monotonic()
        if now > give_up:
            raise RuntimeError("the daemons did not reach their poll-count checkpoints")
        for index, (watch, sim, daemon) in enumerate(started):
            if len(watch.samples) == len(watch.checkpoints):
                continue
            daemon.check_alive()
            if index in due:
                if now >= due[index]:
                    del due[index]
                    cpu, rss = thread_cpu_seconds(daemon.pid), rss_mb(daemon.pid)
                    watch.samples.append(Sample(sim.count(), cpu, rss, time.monotonic()))
            elif sim.count() >= watch.checkpoints[len(watch.samples)]:
                due[index] = now + watch.interval / 2
        time.sleep(0.02)


def rows(results: Results, cadences: Sequence[Tuple[float, Sequence[int]]]) -> None:
    """CPU per poll and RSS at each cadence, the daemons running at once."""
    watches = [Watch(interval, checkpoints) for interval, checkpoints in cadences]
    follow(watches)
    together = " and ".join(f"{w.interval:g} s" for w in watches)
    for watch in watches:
        at = f"at poll_interval {watch.interval:g} s"
        what = f"{watch.span()}, {len(watch.checkpoints) - 1} window(s)"
        if len(watches) > 1:
            what += f"; the {together} daemons at once"
        cpu = watch.per_poll_ms()
        results.add(
            "idle",
            f"CPU per poll {at} ({what})",
            "ms",
            cpu,
            target="< 1 ms",
            met=median(cpu) < 1.0,
        )
        rss = watch.rss()
        results.add(
            "idle", f"RSS {at} ({watch.span()})", "MB", rss, target="< 35 MB", met=max(rss) < 35
        )
