"""Hook fan-out: N hooks that each sleep, all in one order (parallel) against N orders (one
after another), run by the real daemon on a terminate notice. The figure is the hook stage's
wall time: first hook started -> last hook ended, as the hooks write them ($EPOCHREALTIME)."""

from __future__ import annotations

from bench.common import DaemonProcess, SimProcess, read_lines, wait_until
from bench.detection import _time_text

SCRIPT = (
    'echo "s $EPOCHREALTIME" >> @DIR@/marks; sleep {sleep}; echo "e $EPOCHREALTIME" >> @DIR@/marks'
)


def hook_stage(sim: SimProcess, hooks: int, sleep: float, parallel: bool) -> float:
    """Seconds from the first hook's start to the last hook's end."""
    specs = [
        {
            "name": f"h{i}",
            "command": ["/bin/bash", "-c", SCRIPT.format(sleep=sleep)],
            "order": 0 if parallel else i,
            "timeout": "60s",
        }
        for i in range(hooks)
    ]
    daemon = DaemonProcess(
        sim.endpoint, {"hooks": specs, "rebalance": {"enabled": False}}, poll_interval="100ms"
    )
    marks = daemon.path("marks")
    base = sim.count()
    daemon.start()
    try:
        wait_until(lambda: sim.count() > base, 30, "the daemon's first poll")
        sim.call("raise", action="terminate", time=_time_text(120))
        wait_until(
            lambda: len(read_lines(marks)) >= 2 * hooks,
            30 + hooks * sleep * 3,
            "every hook to end",
            pause=0.02,
        )
        sim.call("clear")
        lines = [line.split() for line in read_lines(marks)]
        starts = [float(t) for kind, t in lines if kind == "s"]
        ends = [float(t) for kind, t in lines if kind == "e"]
        return max(ends) - min(starts)
    finally:
        daemon.cleanup()
