"""Resource limits over long runs, and the poll cadence.

The real watcher and daemon (in this process, polls stepped by hand, no sleeping) against
the IMDS simulator, with a notice handled (a real hook process), a rebalance, 503s, token
revocations and resets every 1000 polls. After a warm-up, memory (RSS), file descriptors
and threads must not grow. CI runs 5,000 polls; `SPOTWATCH_LONG=1` runs 100,000 (about a
week of polls at the 5 s default).
"""

from __future__ import annotations

import collections
import os
import time
from pathlib import Path
from typing import Dict, List

from relsupport import LONG, append_hook, base_config, lines, record_stats, write_config

from spotwatch.clouds.aws.imds import ImdsClient
from spotwatch.clouds.aws.monitors import SpotMonitor
from spotwatch.commands.settings import load_service_config
from spotwatch.daemon.shell import Daemon, DaemonParts
from spotwatch.detection.tracker import Observation
from spotwatch.detection.watcher import PollReport, Watcher
from spotwatch.simulator.imds import INSTANCE_ACTION_PATH, ImdsSimulator

POLLS = 100_000 if LONG else 5_000
WARM_UP = 1_000


def usage() -> Dict[str, float]:
    with open("/proc/self/status") as status:
        fields = dict(line.split(":", 1) for line in status if ":" in line)
    return {
        "rss_kb": float(fields["VmRSS"].split()[0]),
        "fds": float(len(os.listdir("/proc/self/fd"))),
        "threads": float(len(os.listdir("/proc/self/task"))),
    }


def test_no_growth_in_memory_fds_or_threads(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with ImdsSimulator() as sim:
        sim._log = collections.deque(maxlen=1000)  # the simulator's own history, not ours
        config = write_config(
            tmp_path / "config.yaml",
            base_config(
                tmp_path / "state",
                sim.endpoint,
                [append_hook("h", out, ["terminate", "rebalance"])],
                imds={"endpoint": sim.endpoint, "timeout": "200ms", "user_data": False},
            ),
        )
        daemon = Daemon(load_service_config(str(config), env={}, with_user_data=False),
                        parts=DaemonParts())  # fmt: skip
        daemon.prepare()
        watcher = daemon.watcher
        assert watcher is not None
        faults = 0
        started = time.monotonic()
        try:
            for poll in range(POLLS):
                phase = poll % 1000
                if phase == 100:
                    sim.raise_notice("terminate", 120)
                elif phase == 110:
                    sim.clear_instance_action()
                elif phase == 200:
                    sim.set_rebalance(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
                elif phase == 210:
                    sim.set_rebalance(None)
                elif phase in (300, 400, 500):
                    faults += 1
                    if phase == 300:
                        sim.inject_status(503)
                    elif phase == 400:
                        sim.revoke_tokens()
                    else:
                        sim.inject_reset()
                report = watcher.poll_once(deadline=time.monotonic() + 0.5)
                assert report.ok or phase in (300, 400, 500, 301, 401, 501), report.errors
                if phase in (100, 101, 200, 201):
                    assert daemon.responder.wait(10)
                if poll == WARM_UP - 1:
                    before = usage()
            assert daemon.responder.wait(10)
            after = usage()
        finally:
            daemon.shutdown()
    runtime = time.monotonic() - started
    handled = len(lines(out))
    assert handled == 2 * (POLLS // 1000), handled  # each cycle: a notice and a rebalance
    figures = {
        "polls": POLLS,
        "faults": faults,
        "handled": handled,
        "rss_kb_before": before["rss_kb"],
        "rss_kb_after": after["rss_kb"],
        "fds_before": before["fds"],
        "fds_after": after["fds"],
        "threads_before": before["threads"],
        "threads_after": after["threads"],
        "seconds": round(runtime, 1),
    }
    print(figures)
    record_stats("resources", **figures)
    assert after["fds"] <= before["fds"], figures
    assert after["threads"] <= before["threads"], figures
    assert after["rss_kb"] - before["rss_kb"] < 2048, figures  # < 2 MB over the whole run


class Starts:
    def __init__(self) -> None:
        self.starts: List[float] = []

    def on_notice(self, monitor: str, observation: Observation) -> None:
        pass

    def on_poll(self, report: PollReport) -> None:
        self.starts.append(report.started)


def test_cadence_stays_on_the_grid() -> None:
    """Polls start on `t0 + k * interval` even when one poll is slow (an IMDS answer held
    back past the interval): the missed tick is skipped, the next polls are on the grid
    again, never bunched up. (Kept out of the state machine: it is a real-time property.)"""
    interval = 0.1  # = the smallest poll budget, so the slow poll overruns its tick
    with ImdsSimulator() as sim:
        client = ImdsClient(sim.endpoint, timeout=0.5)
        listener = Starts()
        watcher = Watcher([SpotMonitor(client)], listener, interval)
        sim.inject_hang(0.17, path=INSTANCE_ACTION_PATH, count=1)  # one slow poll
        stopper = __import__("threading").Timer(2.0, watcher.stop)
        stopper.start()
        try:
            watcher.run()
        finally:
            stopper.cancel()
            client.close()
    starts = listener.starts
    t0 = starts[0]
    offsets = [(s - t0) / interval for s in starts]
    off = [i for i, o in enumerate(offsets) if abs(o - round(o)) > 0.3]
    # A shared VM's scheduler alone can start a poll late now and then (seen here: sleep
    # overshoot p99 19 ms, max 99 ms). What must hold: that is rare, and the poll after a
    # late one is back on the grid, which a loop that shifted its grid would not be.
    assert len(off) <= 2, f"polls off the grid: {[round(offsets[i], 3) for i in off]}"
    assert all(i + 1 < len(offsets) and i + 1 not in off for i in off), offsets
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert min(gaps) > 0.3 * interval, f"polls bunched up: {gaps}"
    assert 14 <= len(starts) <= 21, len(starts)  # ~20 ticks, the slow one skipping one or two
