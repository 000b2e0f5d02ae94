"""Storm: a mass reclaim, every instance of an account calling ECS at once against its
per-account token buckets. A simulation on a simulated clock (no sleeping) that runs the
retry policy module that ships (spotwatch.response.retry: `DeadlineBackoff`, `Gate`) beside
models of the policies it replaces. Part of `python -m bench`; alone:

    python -m bench.storm [--instances 100,500,1000] [--tasks 20] [--plot docs/storm.png]

Each instance: its notice comes at t=0 and it sees it at a random phase of its 5 s poll;
drains at once (UpdateContainerInstancesState), runs the stop step after its hooks (ListTasks,
DescribeTasks, StopTask for its standalone tasks, 16 at a time), and the final stop at notice
time - stop_timeout - margin (ListTasks, StopTask for every task still running, 16 at a
time). Every call takes a 30 ms round trip; the endpoint takes a token from the action's
bucket when the call arrives and answers ThrottlingException when there is none.
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Generator, List, Optional, Tuple

from spotwatch.response.retry import DEFAULT, Gate

# Per-account, per-Region token buckets: (bucket size = burst, refill per second =
# sustained rate). docs/benchmarks.md ("Storm") says where they come from.
ECS_BUCKETS: Dict[str, Tuple[float, float]] = {
    "UpdateContainerInstancesState": (100.0, 20.0),
    "ListTasks": (100.0, 20.0),
    "DescribeTasks": (100.0, 20.0),
    "StopTask": (100.0, 40.0),
}
POLICIES = ("today", "standard", "adaptive", "deadline")


@dataclass(frozen=True)
class Scenario:
    instances: int = 100
    tasks: int = 20
    standalone: int = 10  # of `tasks`; the rest are service tasks, left to the final stop
    lead: float = 120.0  # notice time - moment it is raised
    margin: float = 10.0  # deadline_margin
    stop_timeout: float = 30.0
    hooks: float = 20.0  # how long the hooks take (the stop step starts after them)
    poll: float = 5.0  # detection at a random phase of this
    rtt: float = 0.03
    workers: int = 16
    buckets: Dict[str, Tuple[float, float]] = field(default_factory=lambda: dict(ECS_BUCKETS))

    @property
    def deadline(self) -> float:
        return self.lead - self.margin

    @property
    def final_at(self) -> float:
        return self.lead - self.stop_timeout - self.margin

    @property
    def calls_needed(self) -> int:
        """Per instance, when every call is served the first time."""
        return 1 + 2 + self.standalone + 1 + (self.tasks - self.standalone)


class Bucket:
    def __init__(self, size: float, refill: float) -> None:
        self.size, self.refill, self.tokens, self.when = size, refill, size, 0.0

    def take(self, now: float) -> bool:
        self.tokens = min(self.size, self.tokens + (now - self.when) * self.refill)
        self.when = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


# --------------------------------------------------------------------- client models


class Botocore:
    """botocore's standard mode as it was configured (`today`: 4 attempts) or by default
    (3): backoff rand() * min(2**(attempt-1), 20) s, a retry quota of 500 per client that a
    throttled retry costs 5 of and a first-time success gives 1 back; `adaptive` adds its
    client-side rate limiter (CUBIC, botocore's own calculator) once throttled."""

    def __init__(self, attempts: int, adaptive: bool, start: float) -> None:
        self.attempts, self.quota = attempts, 500
        self.limiter: Optional[Any] = None
        if adaptive:
            from botocore.retries.throttling import CubicCalculator

            self.limiter = CubicCalculator(starting_max_rate=0.5, start_time=start)
        self.rate: Optional[float] = None  # None: not throttled yet, no pacing
        self.next_free = 0.0
        self.sent_times: List[float] = []

    def pace(self, now: float) -> float:
        """Seconds to wait before sending (adaptive mode's token bucket, as a pacer)."""
        if self.rate is None:
            return 0.0
        start = max(now, self.next_free)
        self.next_free = start + 1.0 / max(self.rate, 0.5)
        return start - now

    def answered(self, now: float, ok: bool) -> None:
        if self.limiter is None:
            return
        self.sent_times = [t for t in self.sent_times if t > now - 1.0] + [now]
        measured = float(len(self.sent_times))
        if ok:
            new = self.limiter.success_received(now)
        else:
            current = measured if self.rate is None else min(measured, self.rate)
            new = self.limiter.error_received(current, now)
            self.rate = new
        if self.rate is not None:
            self.rate = max(0.5, min(new, 2.0 * measured))

    def retry_delay(self, attempt: int, rng: random.Random) -> Optional[float]:
        if attempt >= self.attempts or self.quota < 5:
            return None
        self.quota -= 5
        return rng.random() * min(2.0 ** (attempt - 1), 20.0)


# --------------------------------------------------------------------- the simulation

Proc = Generator[Tuple[str, float], Any, Any]


@dataclass
class Instance:
    client: Any  # Gate (the policy that ships) or Botocore
    running: List[int] = field(default_factory=list)  # tasks not stopped yet
    done_at: float = math.inf  # when its last ECS call was served
    failed: bool = False
    waiting: List[Proc] = field(default_factory=list)  # parked at the gate


@dataclass
class Outcome:
    policy: str
    instances: int
    in_time: float  # share of instances whose ECS steps all finished by the deadline
    p50: float  # step completion, seconds after the notice was raised (inf: never)
    p99: float
    sent: int
    needed: int
    first_give_up: Optional[Tuple[float, float]]  # (when, seconds it had left)
    finished: List[float]

    @property
    def amplification(self) -> float:
        return self.sent / self.needed


class Storm:
    def __init__(self, scenario: Scenario, policy: str, seed: int = 1) -> None:
        if policy not in POLICIES:
            raise ValueError(f"unknown policy {policy!r}")
        self.s, self.policy = scenario, policy
        self.rng = random.Random(seed)
        self.now = 0.0
        self._queue: List[Tuple[float, int, Callable[[], None]]] = []
        self._seq = 0
        self._parked: Dict[int, Proc] = {}
        self.buckets = {a: Bucket(*v) for a, v in scenario.buckets.items()}
        self.sent = 0
        self.first_give_up: Optional[Tuple[float, float]] = None

    # -- scheduler: jobs at moments; processes are generators yielding what they wait for:
    # ("sleep", seconds) or ("park", until) at their instance's gate
    def at(self, when: float, job: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (when, self._seq, job))

    def run(self) -> None:
        while self._queue:
            self.now, _, job = heapq.heappop(self._queue)
            job()

    # -- one call, with the policy's retries
    def call(self, inst: Instance, action: str, end: float, urgent: bool) -> Proc:
        attempt = 0
        policy = DEFAULT.urgent() if urgent else DEFAULT
        gate = inst.client if isinstance(inst.client, Gate) else None
        while True:
            if gate is not None:
                while not gate.may_send() and end - self.now > policy.least_attempt:
                    inst.waiting.append(self._current)
                    yield ("park", end - policy.least_attempt)
                if end - self.now <= policy.least_attempt:
                    return self._gave_up(end)
                gate.sent()
            else:
                wait = inst.client.pace(self.now)
                if wait:
                    yield ("sleep", wait)
            yield ("sleep", self.s.rtt / 2)
            self.sent += 1
            ok = self.buckets[action].take(self.now)
            yield ("sleep", self.s.rtt / 2)
            if gate is not None:
                gate.answered(throttled=not ok)
                for _ in range(max(0, gate.allowed - gate.in_flight)):
                    if inst.waiting:
                        waiter = inst.waiting.pop(0)
                        self.at(self.now, lambda w=waiter: self._resume_tracked(w, "go"))
            else:
                inst.client.answered(self.now, ok)
            if ok:
                if gate is None:
                    inst.client.quota = min(500, inst.client.quota + (1 if attempt == 0 else 5))
                return True
            attempt += 1
            if gate is not None:
                delay = policy.delay(gate.backoff_attempt(attempt), end - self.now, self.rng)
            else:
                delay = inst.client.retry_delay(attempt, self.rng)
            if delay is None:
                return self._gave_up(end)
            yield ("sleep", delay)

    _current: Proc

    def _gave_up(self, end: float) -> bool:
        left = min(end, self.s.deadline) - self.now
        if left > 1.0 and (self.first_give_up is None or self.now < self.first_give_up[0]):
            self.first_give_up = (self.now, left)
        return False

    # -- one instance's ECS steps
    def instance(self, inst: Instance, seen: float) -> None:
        s = self.s
        ours = isinstance(inst.client, Gate)
        deadline = s.deadline

        def served(ok: bool) -> None:
            if ok:
                inst.done_at = max(inst.done_at if inst.done_at < math.inf else 0.0, self.now)
            else:
                inst.failed = True

        def single(action: str, end: float, urgent: bool, then: Callable[[], None]) -> Proc:
            ok = yield from self.call(inst, action, end, urgent)
            served(ok)
            if ok:
                then()

        def stops(tasks: List[int], end: float, urgent: bool) -> None:
            queue = list(tasks)

            def worker() -> Proc:
                while queue:
                    task = queue.pop(0)
                    if task not in inst.running:
                        continue
                    ok = yield from self.call(inst, "StopTask", end, urgent)
                    served(ok)
                    if ok and task in inst.running:
                        inst.running.remove(task)

            for _ in range(min(s.workers, len(queue))):
                self.spawn(self.now, worker())

        stop_end = s.final_at if ours else math.inf  # ours gives way to the final stop
        call_end = deadline if ours else math.inf  # botocore's retries know no deadline
        standalone = inst.running[: s.standalone]
        self.spawn(seen, single("UpdateContainerInstancesState", call_end, False, lambda: None))
        after_hooks = max(seen + s.hooks, 0.0)
        stop_step_end = min(stop_end, call_end)
        self.spawn(
            after_hooks,
            single(
                "ListTasks",
                stop_step_end,
                False,
                lambda: self.spawn(
                    self.now,
                    single(
                        "DescribeTasks",
                        stop_step_end,
                        False,
                        lambda: stops(standalone, stop_step_end, False),
                    ),
                ),
            ),
        )
        self.spawn(
            max(s.final_at, seen),
            single("ListTasks", call_end, True, lambda: stops(list(inst.running), call_end, True)),
        )

    def spawn(self, when: float, proc: Proc) -> None:
        """Start `proc` at `when`; it can park itself at the gate (self._current)."""

        def first() -> None:
            self._step_tracked(proc, None)

        self.at(when, first)

    def _step_tracked(self, proc: Proc, value: Any) -> None:
        self._current = proc
        try:
            kind, arg = proc.send(value)
        except StopIteration:
            return
        if kind == "sleep":
            self.at(self.now + arg, lambda: self._step_tracked(proc, None))
        else:
            self._parked[id(proc)] = proc
            self.at(arg, lambda: self._resume_tracked(proc, "late"))

    def _resume_tracked(self, proc: Proc, value: str) -> None:
        if self._parked.pop(id(proc), None) is not None:
            self._step_tracked(proc, value)


def simulate(scenario: Scenario, policy: str, seed: int = 1) -> Outcome:
    storm = Storm(scenario, policy, seed)
    rng = random.Random(seed + 1)
    fleet: List[Instance] = []
    for _ in range(scenario.instances):
        if policy == "deadline":
            client: Any = Gate(scenario.workers)
        else:
            client = Botocore(4 if policy == "today" else 3, policy == "adaptive", 0.0)
        inst = Instance(client, running=list(range(scenario.tasks)))
        fleet.append(inst)
        storm.instance(inst, rng.uniform(0.0, scenario.poll))
    storm.run()
    finished = [
        i.done_at if not i.failed and not i.running and i.done_at <= scenario.deadline else math.inf
        for i in fleet
    ]
    ordered = sorted(finished)
    return Outcome(
        policy=policy,
        instances=scenario.instances,
        in_time=sum(1 for f in finished if f < math.inf) / len(finished),
        p50=ordered[len(ordered) // 2],
        p99=ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)],
        sent=storm.sent,
        needed=scenario.calls_needed * scenario.instances,
        first_give_up=storm.first_give_up,
        finished=finished,
    )


def capacity_note(scenario: Scenario) -> str:
    """Is the bucket enough in principle? StopTask calls needed vs bucket + refill x window."""
    size, refill = scenario.buckets["StopTask"]
    can = size + refill * scenario.deadline
    need = scenario.tasks * scenario.instances
    return f"StopTask needed {need}, bucket + refill x {scenario.deadline:g} s = {can:.0f}"


def plot(outcomes: Dict[int, List[Outcome]], scenario: Scenario, path: str) -> bool:
    """Completion-time CDF per policy at each fleet size; False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    sizes = sorted(outcomes)
    figure, axes = plt.subplots(1, len(sizes), figsize=(5 * len(sizes), 4), sharey=True)
    if len(sizes) == 1:
        axes = [axes]
    for ax, size in zip(axes, sizes):
        for outcome in outcomes[size]:
            done = sorted(f for f in outcome.finished if f < math.inf)
            ys = [(n + 1) / len(outcome.finished) for n in range(len(done))]
            ax.step(done, ys, where="post", label=f"{outcome.policy} ({outcome.in_time:.0%})")
        ax.axvline(scenario.deadline, color="grey", linestyle="--", linewidth=0.8)
        ax.set_title(f"{size} instances x {scenario.tasks} tasks")
        ax.set_xlabel("ECS steps done, s after the notice")
        ax.set_xlim(0, scenario.lead)
        ax.legend(loc="upper left", fontsize=8)
    axes[0].set_ylabel("share of instances done in time")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", default="100,500,1000")
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--plot", default="")
    args = parser.parse_args()
    outcomes: Dict[int, List[Outcome]] = {}
    scenario = Scenario(tasks=args.tasks)
    for size in (int(x) for x in args.instances.split(",")):
        scenario = Scenario(instances=size, tasks=args.tasks)
        print(f"{size} instances: {capacity_note(scenario)}")
        outcomes[size] = [simulate(scenario, p) for p in POLICIES]
        for o in outcomes[size]:
            gave = (
                f"{o.first_give_up[0]:.1f} s ({o.first_give_up[1]:.0f} s left)"
                if o.first_give_up
                else "none"
            )
            print(
                f"  {o.policy:>9}: in time {o.in_time:6.1%}  p50 {o.p50:6.1f}  p99 {o.p99:6.1f}"
                f"  sent/needed {o.amplification:5.2f}  first give-up {gave}"
            )
    if args.plot:
        print("plot:", args.plot if plot(outcomes, scenario, args.plot) else "no matplotlib")


if __name__ == "__main__":
    main()
