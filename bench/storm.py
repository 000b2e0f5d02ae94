"""Storm: a mass reclaim, every instance of an account calling ECS at once against its
per-account token buckets. A simulation on a simulated clock (no sleeping) that runs the
retry policy module that ships (spotwatch.parts.awsapi.retry: `DeadlineBackoff`, `Gate`) beside
models of the policies it replaces. Part of `python -m bench`; alone:

    python -m bench.storm [--instances 100,500,1000] [--tasks 20] [--plot docs/storm.png]

Each instance: its notice comes at t=0 and it sees it at a random phase of its 5 s poll;
drains at once (UpdateContainerInstancesState), runs the stop step after its hooks (ListTasks,
DescribeTasks, StopTask for its standalone tasks, 16 at a time), and the final stop at notice
time - stop_timeout - margin (ListTasks, StopTask for every task still running, 16 at a
time). Every call takes a 30 ms round trip; the endpoint takes a token from the action's
bucket when the call arrives and answers ThrottlingException when there is none. Policy
"runtime" (`ecs.stop_via: runtime`) stops the tasks on the instance instead, and only the
drain, DescribeTasks and the StopTask of tasks a restart policy keeps use the buckets.
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Generator, List, Optional, Tuple

from spotwatch.parts.awsapi.buckets import bucket_of
from spotwatch.parts.awsapi.retry import DEFAULT, Gate, Pacer

# Per-account, per-Region token buckets of the ECS action categories the response calls:
# (bucket size = burst, refill per second = sustained). docs/benchmarks.md ("Storm") says
# where they come from; spotwatch.parts.awsapi.buckets says which action draws from which.
ECS_BUCKETS: Dict[str, Tuple[float, float]] = {
    "cluster resource modify": (100.0, 40.0),  # StopTask, UpdateContainerInstancesState
    "cluster resource read": (100.0, 20.0),  # ListTasks, DescribeTasks
}
ACTIONS = {  # as the API names them -> as boto3 does
    "UpdateContainerInstancesState": "update_container_instances_state",
    "ListTasks": "list_tasks",
    "DescribeTasks": "describe_tasks",
    "StopTask": "stop_task",
}


def bucket_for(action: str) -> str:
    """The bucket an ECS action (as the API names it) draws from, as the daemon reckons it."""
    return bucket_of("ecs", ACTIONS.get(action, action))


PACER: Dict[str, float] = {}  # Pacer field overrides, for trying other settings
POLICIES = ("today", "standard", "adaptive", "deadline", "paced", "runtime")
SHIPPED_API = "paced"  # what `ecs.stop_via: api` ships; "runtime" is paced plus the runtime


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
    # The runtime policy: tasks (the last ones, service tasks) a restart policy keeps, which
    # go through StopTask; a local call's round trip; how long containers take to exit after
    # SIGTERM (charged to the runtime: StopTask counts when it is served, before that).
    restarting: int = 1
    local: float = 0.005
    shutdown: float = 1.0

    @property
    def deadline(self) -> float:
        return self.lead - self.margin

    @property
    def final_at(self) -> float:
        return self.lead - self.stop_timeout - self.margin

    def calls_needed(self, policy: str = SHIPPED_API) -> int:
        """AWS calls per instance, when every call is served the first time."""
        if policy == "runtime":  # the drain, DescribeTasks, StopTask for the restarting
            return 1 + 1 + self.restarting
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

Proc = Generator[Tuple[Any, ...], Any, Any]


@dataclass
class Waiter:
    """A call in line at its instance's client: `proc` resumes with True (sent) or False (its
    bound came first)."""

    proc: Proc
    end: float
    urgent: bool
    seq: int
    alive: bool = True


@dataclass
class Lane:
    """One throttling bucket of one instance's client (callline.py keeps one line and one Pacer
    per bucket)."""

    pacer: Optional[Pacer]
    line: List[Tuple[int, int, Waiter]] = field(default_factory=list)  # (urgent? 0: 1, seq)
    wake_at: float = math.inf  # a dispatch is scheduled then (inf: none)


@dataclass
class Instance:
    client: Any  # Gate (spotwatch's policies) or Botocore
    running: List[int] = field(default_factory=list)  # tasks not stopped yet
    done_at: float = math.inf  # when its last ECS call was served
    failed: bool = False
    lanes: Dict[str, Lane] = field(default_factory=dict)


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
    stopped: int = 0  # tasks stopped by a served StopTask (the rest are killed at the end)
    final_served: int = 0  # StopTask served to the final stop
    final_tokens: float = 0.0  # StopTask tokens the bucket had for the final stop's window
    events: int = 0
    stop_times: List[float] = field(default_factory=list)
    sent_by: Dict[str, int] = field(default_factory=dict)  # calls sent per action

    @property
    def amplification(self) -> float:
        return self.sent / self.needed


class Storm:
    """Processes are generators yielding what they wait for: ("sleep", seconds), or
    ("line", instance, action, urgent, end, place) at their instance's client (spotwatch's
    policies). Every wait is one event on a heap: nothing is polled."""

    def __init__(self, scenario: Scenario, policy: str, seed: int = 1) -> None:
        if policy not in POLICIES:
            raise ValueError(f"unknown policy {policy!r}")
        self.s, self.policy = scenario, policy
        self.paced = policy in ("paced", "runtime")
        self.rng = random.Random(seed)
        self.now = 0.0
        self._queue: List[Tuple[float, int, Callable[[], None]]] = []
        self._seq = 0
        self.buckets = {a: Bucket(*v) for a, v in scenario.buckets.items()}
        self.sent = 0
        self.sent_by: Dict[str, int] = {}
        self.events = 0
        self.stopped = 0
        self.stop_times: List[float] = []  # when each task was stopped, by the deadline
        self.final_served = 0
        self.first_give_up: Optional[Tuple[float, float]] = None

    def at(self, when: float, job: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (when, self._seq, job))

    def run(self) -> None:
        while self._queue:
            self.now, _, job = heapq.heappop(self._queue)
            self.events += 1
            job()

    def spawn(self, when: float, proc: Proc) -> None:
        self.at(when, lambda: self._step(proc, None))

    def _step(self, proc: Proc, value: Any) -> None:
        try:
            wanted = proc.send(value)
        except StopIteration:
            return
        if wanted[0] == "sleep":
            self.at(self.now + wanted[1], lambda: self._step(proc, None))
            return
        _, inst, action, urgent, end, seq = wanted
        lane = self._lane(inst, action)
        waiter = Waiter(proc, end, urgent, seq)
        heapq.heappush(lane.line, (0 if urgent else 1, waiter.seq, waiter))
        self.at(end - DEFAULT.least_attempt, lambda: self._expire(waiter))
        self._dispatch(inst)

    def _lane(self, inst: Instance, action: str) -> Lane:
        # One line and pacer per client and bucket, as callline.py keeps them; the final
        # stop's calls go first in theirs.
        bucket = bucket_for(action)
        lane = inst.lanes.get(bucket)
        if lane is None:
            lane = inst.lanes[bucket] = Lane(Pacer(**PACER) if self.paced else None)
        return lane

    def _expire(self, waiter: Waiter) -> None:
        if waiter.alive:
            waiter.alive = False
            self._step(waiter.proc, False)

    def _dispatch(self, inst: Instance) -> None:
        """Send what the gate and each API's pacer allow now; wake later for the rest."""
        gate: Gate = inst.client
        for lane in inst.lanes.values():
            while lane.line and gate.may_send():
                waiter = lane.line[0][2]
                if not waiter.alive:
                    heapq.heappop(lane.line)
                    continue
                ready = -math.inf
                if lane.pacer:
                    waiting = sum(1 for _, _, w in lane.line if w.alive)
                    room = waiter.end - self.now - DEFAULT.least_attempt
                    ready = lane.pacer.ready_at(waiting, room)
                if ready > self.now:
                    if ready < lane.wake_at:
                        lane.wake_at = ready
                        self.at(ready, lambda lane=lane: self._wake(inst, lane))
                    break
                heapq.heappop(lane.line)
                waiter.alive = False
                gate.sent()
                if lane.pacer:
                    lane.pacer.sent(self.now, self.rng)
                self.at(self.now, lambda w=waiter: self._step(w.proc, True))

    def _wake(self, inst: Instance, lane: Lane) -> None:
        if lane.wake_at <= self.now:
            lane.wake_at = math.inf
            self._dispatch(inst)

    def _exchange(self, action: str) -> Proc:
        """One attempt: half a round trip there, the bucket, half back. Returns served."""
        yield ("sleep", self.s.rtt / 2)
        self.sent += 1
        self.sent_by[action] = self.sent_by.get(action, 0) + 1
        ok = self.buckets[bucket_for(action)].take(self.now)
        yield ("sleep", self.s.rtt / 2)
        return ok

    # -- one call, with the policy's retries
    def call(self, inst: Instance, action: str, end: float, urgent: bool) -> Proc:
        if isinstance(inst.client, Gate):
            return (yield from self._call_ours(inst, action, end, urgent))
        attempt = 0
        client: Botocore = inst.client
        while True:
            wait = client.pace(self.now)
            if wait:
                yield ("sleep", wait)
            ok = yield from self._exchange(action)
            client.answered(self.now, ok)
            if ok:
                client.quota = min(500, client.quota + (1 if attempt == 0 else 5))
                return True
            attempt += 1
            delay = client.retry_delay(attempt, self.rng)
            if delay is None:
                return self._gave_up(end)
            yield ("sleep", delay)

    def _call_ours(self, inst: Instance, action: str, end: float, urgent: bool) -> Proc:
        """As spotwatch.parts.awsapi.clients `AwsClients.call` does it: in line at the client (the
        Gate; and, paced, the API's Pacer), retried until the call's bound."""
        policy = DEFAULT.urgent() if urgent else DEFAULT
        gate: Gate = inst.client
        attempt = 0
        self._seq += 1
        seq = self._seq  # a throttled call keeps its place in line, as in aws.py
        while True:
            if not (yield ("line", inst, action, urgent, end, seq)):
                return self._gave_up(end)
            sent_at = self.now
            ok = yield from self._exchange(action)
            gate.answered(throttled=not ok)
            lane = self._lane(inst, action)
            if lane.pacer:
                lane.pacer.answered(self.now, not ok, sent_at)
            self._dispatch(inst)
            if ok:
                return True
            attempt += 1
            if lane.pacer:
                continue  # back in line: the pacer spaces it
            delay = policy.delay(gate.backoff_attempt(attempt), end - self.now, self.rng)
            if delay is None:
                return self._gave_up(end)
            yield ("sleep", delay)

    def _gave_up(self, end: float) -> bool:
        left = min(end, self.s.deadline) - self.now
        if left > 1.0 and (self.first_give_up is None or self.now < self.first_give_up[0]):
            self.first_give_up = (self.now, left)
        return False

    # -- one instance's ECS steps
    def _served(self, inst: Instance, ok: bool) -> None:
        if ok:
            inst.done_at = max(inst.done_at if inst.done_at < math.inf else 0.0, self.now)
        else:
            inst.failed = True

    def _single(
        self, inst: Instance, action: str, end: float, urgent: bool, then: Callable[[], None]
    ) -> Proc:
        ok = yield from self.call(inst, action, end, urgent)
        self._served(inst, ok)
        if ok:
            then()

    def _stopped(self, inst: Instance, task: int, urgent: bool) -> None:
        if task in inst.running:
            inst.running.remove(task)
            if self.now <= self.s.deadline:  # later, the task was killed anyway
                self.stopped += 1
                self.stop_times.append(self.now)
                self.final_served += urgent

    def _stop_tasks(self, inst: Instance, tasks: List[int], end: float, urgent: bool) -> None:
        """StopTask for each of `tasks` still running, `workers` at a time."""
        queue = list(tasks)

        def worker() -> Proc:
            while queue:
                task = queue.pop(0)
                if task not in inst.running:
                    continue
                ok = yield from self.call(inst, "StopTask", end, urgent)
                self._served(inst, ok)
                if ok:
                    self._stopped(inst, task, urgent)

        for _ in range(min(self.s.workers, len(queue))):
            self.spawn(self.now, worker())

    def instance(self, inst: Instance, seen: float) -> None:
        s = self.s
        if self.policy == "runtime":
            return self._instance_on_host(inst, seen)
        ours = isinstance(inst.client, Gate)
        stop_end = s.final_at if ours else math.inf  # ours gives way to the final stop
        call_end = s.deadline if ours else math.inf  # botocore's retries know no deadline
        standalone = inst.running[: s.standalone]
        self.spawn(seen, self._single(inst, "UpdateContainerInstancesState", call_end, False, _no))
        step_end = min(stop_end, call_end)

        def describe() -> None:
            then = lambda: self._stop_tasks(inst, standalone, step_end, False)  # noqa: E731
            self.spawn(self.now, self._single(inst, "DescribeTasks", step_end, False, then))

        self.spawn(
            max(seen + s.hooks, 0.0), self._single(inst, "ListTasks", step_end, False, describe)
        )
        final = lambda: self._stop_tasks(inst, list(inst.running), call_end, True)  # noqa: E731
        self.spawn(max(s.final_at, seen), self._single(inst, "ListTasks", call_end, True, final))

    def _instance_on_host(self, inst: Instance, seen: float) -> None:
        """`ecs.stop_via: runtime` (spotwatch/parts/ecs/onhost.py): the drain and DescribeTasks
        (which tasks are standalone) as before; the tasks listed by the agent, not ListTasks;
        each stopped here (a local call, `shutdown` seconds until its containers exit), and
        the `restarting` ones, which an ECS restart policy would start again, with StopTask."""
        s = self.s
        kept = set(inst.running[len(inst.running) - s.restarting :]) if s.restarting else set()
        self.spawn(
            seen, self._single(inst, "UpdateContainerInstancesState", s.deadline, False, _no)
        )

        def here(tasks: List[int], end: float, urgent: bool) -> None:
            local = [t for t in tasks if t in inst.running and t not in kept]
            self._stop_tasks(inst, [t for t in tasks if t in kept], end, urgent)
            if local:
                self.spawn(self.now, self._exits(inst, local))

        def stop_step() -> Proc:
            yield ("sleep", s.local)  # the agent's /v1/tasks, the runtime's version
            standalone = inst.running[: s.standalone]
            then = lambda: here(standalone, s.final_at, False)  # noqa: E731
            yield from self._single(inst, "DescribeTasks", s.final_at, False, then)

        def final_stop() -> Proc:
            yield ("sleep", s.local)
            here(list(inst.running), s.deadline, True)

        self.spawn(max(seen + s.hooks, 0.0), stop_step())
        self.spawn(max(s.final_at, seen), final_stop())

    def _exits(self, inst: Instance, tasks: List[int]) -> Proc:
        """The runtime's stops of `tasks`, all at once: their containers exit after
        `shutdown` s, the answers come a local round trip later."""
        yield ("sleep", self.s.shutdown)
        for task in tasks:
            self._stopped(inst, task, urgent=False)  # no StopTask served
        yield ("sleep", self.s.local)
        self._served(inst, True)


def _no() -> None:
    """Nothing follows."""


def simulate(scenario: Scenario, policy: str, seed: int = 1) -> Outcome:
    storm = Storm(scenario, policy, seed)
    rng = random.Random(seed + 1)
    fleet: List[Instance] = []
    for _ in range(scenario.instances):
        if policy in ("deadline", "paced", "runtime"):
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
    return Outcome(
        policy=policy,
        instances=scenario.instances,
        **spread(finished),
        sent=storm.sent,
        needed=scenario.calls_needed(policy) * scenario.instances,
        first_give_up=storm.first_give_up,
        finished=finished,
        stopped=storm.stopped,
        final_served=storm.final_served,
        final_tokens=final_tokens(scenario),
        events=storm.events,
        stop_times=storm.stop_times,
        sent_by=storm.sent_by,
    )


def spread(finished: List[float]) -> Dict[str, float]:
    """Share in time, p50 and p99 of completion times (inf: not done in time)."""
    ordered = sorted(finished)
    return {
        "in_time": sum(1 for f in finished if f < math.inf) / len(finished),
        "p50": ordered[len(ordered) // 2],
        "p99": ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)],
    }


MODIFY = bucket_of("ecs", "stop_task")  # StopTask's bucket, which the drain shares


def final_tokens(scenario: Scenario) -> float:
    """The most StopTask tokens the final stop's window can have: a full bucket at its start
    and the refill until the deadline."""
    size, refill = scenario.buckets[MODIFY]
    return size + refill * (scenario.deadline - scenario.final_at)


def capacity_note(scenario: Scenario) -> str:
    """Is the bucket enough in principle? Calls needed from StopTask's bucket (every StopTask
    and the drain) vs bucket + refill x window."""
    size, refill = scenario.buckets[MODIFY]
    can = size + refill * scenario.deadline
    need = (scenario.tasks + 1) * scenario.instances
    return (
        f"StopTask and drain calls needed {need}, bucket + refill x {scenario.deadline:g} s"
        f" = {can:.0f}"
    )


def plot(outcomes: Dict[int, List[Outcome]], scenario: Scenario, path: str) -> bool:
    """Per policy at each fleet size: the completion-time CDF (top) and the tasks stopped
    over time, by a served StopTask or, with the runtime, by their containers' exit (bottom:
    where capacity is not enough nobody completes, and this shows who got the tokens); False
    when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    sizes = sorted(outcomes)
    figure, grid = plt.subplots(2, len(sizes), figsize=(5 * len(sizes), 8), squeeze=False)
    for column, size in enumerate(sizes):
        done_ax, stops_ax = grid[0][column], grid[1][column]
        for outcome in outcomes[size]:
            done = sorted(f for f in outcome.finished if f < math.inf)
            ys = [(n + 1) / len(outcome.finished) for n in range(len(done))]
            done_ax.step(done, ys, where="post", label=f"{outcome.policy} ({outcome.in_time:.0%})")
            stops = sorted(outcome.stop_times)
            label = f"{outcome.policy} ({len(stops)})"
            stops_ax.step(stops, range(1, len(stops) + 1), where="post", label=label)
        for ax in (done_ax, stops_ax):
            ax.axvline(scenario.deadline, color="grey", linestyle="--", linewidth=0.8)
            ax.set_xlim(0, scenario.lead)
            ax.legend(loc="upper left", fontsize=8)
        stops_ax.axvline(scenario.final_at, color="grey", linestyle=":", linewidth=0.8)
        done_ax.set_title(f"{size} instances x {scenario.tasks} tasks")
        done_ax.set_xlabel("ECS steps done, s after the notice")
        done_ax.set_ylim(0, 1.05)
        stops_ax.set_xlabel("s after the notice (dotted: the final stop starts)")
    grid[0][0].set_ylabel("share of instances done in time")
    grid[1][0].set_ylabel("tasks stopped (StopTask served, or containers exited)")
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
                f"  sent/needed {o.amplification:5.2f}  tasks stopped {o.stopped}"
                f"  final stop served {o.final_served}/{o.final_tokens:.0f}  first give-up {gave}"
            )
    if args.plot:
        print("plot:", args.plot if plot(outcomes, scenario, args.plot) else "no matplotlib")


if __name__ == "__main__":
    main()
