"""Idle cost: CPU per poll and resident memory of the real daemon, against the shell loop
from the AWS documentation, both polling the same simulator (in a process of its own).

The daemon is `python -m spotwatch run` (ECS off, no hooks, rebalance on: two GETs a poll);
its CPU is the sum of its threads' time on CPU (/proc/PID/task/*/schedstat, ns precision).
The shell loop is AWS's: a token PUT and a GET of spot/instance-action with curl, then
`sleep`; its CPU is bash's own plus every waited-for descendant's (curl, the `$(...)`
subshell, sleep: utime+stime+cutime+cstime in /proc/PID/stat). Polls are counted by the
simulator (GETs of spot/instance-action). Readings are taken at poll-count checkpoints, so
start-up is left out of the per-poll figures.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from typing import List, Sequence

from bench.common import (
    DaemonProcess,
    SimProcess,
    child_env,
    cpu_seconds,
    rss_mb,
    thread_cpu_seconds,
)

SHELL_LOOP = r"""
E=$1; S=$2
while true; do
  TOKEN=$(curl -s -X PUT "$E/latest/api/token" -H "X-aws-ec2-metadata-token-ttl-seconds: 21600")
  curl -s -H "X-aws-ec2-metadata-token: $TOKEN" "$E/latest/meta-data/spot/instance-action"
  sleep "$S"
done
"""


@dataclass(frozen=True)
class Sample:
    polls: int
    cpu: float  # seconds
    rss: float  # MB
    at: float  # monotonic


def _wait_polls(sim: SimProcess, base: int, target: int, interval: float, alive: object) -> None:
    """Until the simulator has answered `target` polls since `base` (cheap on the simulator:
    sleep most of the expected time, then look every 20 ms)."""
    give_up = time.monotonic() + 60 + target * interval * 5
    while True:
        done = sim.count() - base
        if done >= target:
            return
        if time.monotonic() > give_up:
            raise RuntimeError(f"only {done} of {target} polls came")
        check = getattr(alive, "check_alive", None)
        if check is not None:
            check()
        time.sleep(max(0.02, (target - done) * interval * 0.8))


def spotwatch_run(sim: SimProcess, checkpoints: Sequence[int], interval: float) -> List[Sample]:
    daemon = DaemonProcess(sim.endpoint, poll_interval=f"{interval * 1000:g}ms").start()
    try:
        base = sim.count()
        samples = []
        for target in checkpoints:
            _wait_polls(sim, base, target, interval, daemon)
            cpu = thread_cpu_seconds(daemon.pid)
            rss = rss_mb(daemon.pid)
            samples.append(Sample(sim.count() - base, cpu, rss, time.monotonic()))
        return samples
    finally:
        daemon.cleanup()


class _Shell:
    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"the shell loop exited with {self.proc.returncode}")


def shell_run(sim: SimProcess, checkpoints: Sequence[int], interval: float) -> List[Sample]:
    proc = subprocess.Popen(
        ["/bin/bash", "-c", SHELL_LOOP, "loop", sim.endpoint, f"{interval:g}"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=child_env(),
    )
    try:
        base = sim.count()
        samples = []
        for target in checkpoints:
            _wait_polls(sim, base, target, interval, _Shell(proc))
            cpu = cpu_seconds(proc.pid, children=True)
            samples.append(Sample(sim.count() - base, cpu, rss_mb(proc.pid), time.monotonic()))
        return samples
    finally:
        proc.terminate()
        proc.wait(10)


def per_poll_ms(first: Sample, second: Sample) -> float:
    return (second.cpu - first.cpu) / max(1, second.polls - first.polls) * 1000
