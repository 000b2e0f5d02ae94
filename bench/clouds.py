"""The other clouds: Google's hanging GET against plain polling, and each cloud's idle cost.

Detection latency on Google Cloud at poll_interval 5 s, preemption raised -> first hook
started, both ways in one run: with the hanging GET (as shipped) and with plain polling (the
metadata server refuses `wait_for_change`, so the daemon reads the value every poll, as it
does whenever the hanging GET fails). A preemption is one notice for good, so each trial is
a fresh daemon (its own state) whose first poll starts the grid; the preemption is raised at
a random phase of it. "Raised" is the bench's wall clock as the simulator's value turns; the
hook writes bash's `$EPOCHREALTIME` (no fork), so its own start counts as ours.

Idle cost: a daemon per cloud at poll_interval 5 s, each against its cloud's simulator, all
at once; CPU seconds of its threads (/proc/PID/task/*/schedstat) per minute of wall clock,
and requests per minute, from a reading half an interval after its second poll (start-up
done, however loaded the machine) to one a window later.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Tuple

from bench.common import DaemonProcess, read_lines, thread_cpu_seconds, wait_until
from spotwatch.clouds.azure.simulator import AzureMetadataSimulator
from spotwatch.clouds.gcp.simulator import PREEMPTED, PREFIX, GcpMetadataSimulator
from spotwatch.simulator.imds import ImdsSimulator
from spotwatch.simulator.service import SimulatedService

STAMP = 'echo "$EPOCHREALTIME" >> @DIR@/marks'
INTERVAL = 5.0


def _gcp_daemon(sim: GcpMetadataSimulator, hooks: List[Dict[str, Any]]) -> DaemonProcess:
    settings = {"cloud": "gcp", "gcp": {"endpoint": sim.endpoint}, "hooks": hooks}
    return DaemonProcess(sim.endpoint, settings, poll_interval=f"{INTERVAL:g}s")


def preemption_latency(trials: int, hanging: bool, seed: int = 7) -> List[float]:
    """ms from `preempted` turning TRUE to the first hook running, per trial."""
    rng = random.Random(seed)
    hook = {"name": "stamp", "command": ["/bin/bash", "-c", STAMP], "actions": ["terminate"]}
    out: List[float] = []
    with GcpMetadataSimulator() as sim:
        sim.refuse_waits = not hanging
        for _ in range(trials):
            sim.set_value(PREEMPTED, "FALSE")
            daemon = _gcp_daemon(sim, [hook])
            polled = sim.count(path=PREFIX + PREEMPTED)
            daemon.start()
            try:
                wait_until(lambda p=polled: sim.count(path=PREFIX + PREEMPTED) > p, 30, "a poll")
                time.sleep(rng.uniform(0, INTERVAL))
                raised = time.time()
                sim.preempt()
                marks = daemon.path("marks")
                wait_until(lambda m=marks: read_lines(m), 2 * INTERVAL + 5, "the hook")
                out.append((float(read_lines(marks)[0]) - raised) * 1000)
            finally:
                daemon.cleanup()
    return out


@dataclass
class Idle:
    cloud: str
    sim: SimulatedService
    daemon: DaemonProcess
    samples: List[Tuple[float, float, int]]  # (monotonic, CPU seconds, requests answered)

    def read(self) -> None:
        self.daemon.check_alive()
        cpu = thread_cpu_seconds(self.daemon.pid)
        self.samples.append((time.monotonic(), cpu, self.sim.count()))

    def per_minute(self) -> Tuple[float, float]:
        (t0, cpu0, n0), (t1, cpu1, n1) = self.samples[0], self.samples[-1]
        minutes = (t1 - t0) / 60
        return (cpu1 - cpu0) * 1000 / minutes, (n1 - n0) / minutes


def _polls(daemon: DaemonProcess) -> int:
    """How many polls the daemon has recorded (poll.json is rewritten after each)."""
    seen = _SEEN.setdefault(daemon.pid, [])
    try:
        stamp = json.loads(daemon.path("state/poll.json").read_text())["time"]
    except (OSError, ValueError, KeyError):
        return len(seen)
    if stamp not in seen:
        seen.append(stamp)
    return len(seen)


_SEEN: Dict[int, List[str]] = {}


def idle_per_minute(window: float) -> List[Idle]:
    """Each cloud's daemon idle for `window` seconds after start-up, all at once."""
    gcp, azure, aws = GcpMetadataSimulator(), AzureMetadataSimulator(), ImdsSimulator()
    runs: List[Idle] = []
    try:
        for name, sim, settings in (
            ("aws", aws, {"cloud": "aws"}),
            ("gcp", gcp, {"cloud": "gcp", "gcp": {"endpoint": ""}}),
            ("azure", azure, {"cloud": "azure", "azure": {"endpoint": ""}}),
        ):
            sim.start()
            for section in ("gcp", "azure"):
                if section in settings:
                    settings[section] = {"endpoint": sim.endpoint}
            daemon = DaemonProcess(sim.endpoint, settings, poll_interval=f"{INTERVAL:g}s")
            runs.append(Idle(name, sim, daemon.start(), []))
        for run in runs:
            wait_until(lambda r=run: _polls(r.daemon) >= 2, 60 + 3 * INTERVAL, "two polls")
        time.sleep(INTERVAL / 2)
        for run in runs:
            run.read()
        time.sleep(window)
        for run in runs:
            run.read()
    finally:
        for run in runs:
            run.daemon.cleanup()
        for sim in (gcp, azure, aws):
            sim.stop()
    return runs
