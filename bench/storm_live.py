"""Storm, live: a scale model of bench/storm.py with real daemons, compared with the
simulation at the same size and parameters. Part of `python -m bench` (not `--quick`); alone:

    python -m bench.storm_live [--instances 30] [--per 1000,100,100x2] [--lead 60]
                               [--policies paced,runtime]

N real daemons (`python -m spotwatch run`), each with its own config, state folder and IMDS
simulator, ECS on and its agent found at `/agent/<n>` of one ECS endpoint
(bench/storm_world.py) that throttles with the simulation's buckets scaled by N / per
(per 1000: as tight as the 1,000-instance storm; per 100: as at 100 instances; x2: refilled
twice as fast, as the 120 s storm's buckets refill per phase of this 60 s one).
The notices are raised at the same moment on every simulator, notice time = now + lead.
The simulation (`storm.simulate(..., "paced")`) then runs the same `Scenario`; the
figures of both are computed the same way from the calls and step outcomes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, Dict, List, Tuple

from bench.common import (
    AWS_ENV,
    INSTANCE_ACTION,
    DaemonProcess,
    cpu_seconds,
    fmt,
    percentile,
    wait_until,
)
from bench.storm import (
    ECS_BUCKETS,
    SHIPPED_API,
    Outcome,
    Scenario,
    final_tokens,
    simulate,
    spread,
)
from bench.storm_world import Fleet, StormEndpoint
from spotwatch.simulator.imds import ImdsSimulator

# A run lasts as long as the notice's lead: the storm's timeline scaled to fit ~1 minute.
LIVE = Scenario(lead=60.0, margin=10.0, stop_timeout=15.0, hooks=10.0, poll=5.0)
FAILED_EVENTS = ("ecs-failed", "ecs-task-stop-failed", "ecs-agent-unreachable")


def scaled(instances: int, per: int, lead: float = LIVE.lead, faster: float = 1.0) -> Scenario:
    """The live scenario for `instances`, buckets scaled by instances / per and refilled
    `faster` times as fast (2: the 120 s storm's refill per phase in this 60 s one)."""
    share = instances / per
    buckets = {a: (size * share, rate * share * faster) for a, (size, rate) in ECS_BUCKETS.items()}
    return replace(LIVE, instances=instances, lead=lead, buckets=buckets)


def scalings(text: str) -> List[Tuple[int, float]]:
    """`1000,100,100x2` -> [(1000, 1.0), (100, 1.0), (100, 2.0)]."""
    out = []
    for item in text.split(","):
        per, _, faster = item.partition("x")
        out.append((int(per), float(faster or 1)))
    return out


@dataclass
class LiveRun:
    outcome: Outcome
    seen: List[float]  # per instance: when its daemon saw the notice, s after it was raised
    lag: List[float]  # per instance: seen -> its first ECS call arrived, s
    failed_events: Dict[str, int]
    daemon_cpu: float  # all daemons' CPU from the raise to the deadline + 2 s, s
    wall: float  # that window, s
    world_cpu: float  # this process (endpoint, simulators), same window, s
    start_cpu: float  # all daemons' CPU to start and find their agent, s
    jitter: List[float]  # how late a 10 ms sleep woke during the storm, ms
    load: Tuple[float, float]  # 1-minute load before and after
    agent_asks: int
    extra: Dict[str, Any] = field(default_factory=dict)


def outcome_of(
    scenario: Scenario, endpoint: StormEndpoint, failed: List[bool], policy: str = SHIPPED_API
) -> Outcome:
    """The simulation's figures (bench/storm.py `simulate`), from the calls and container
    exits the endpoint recorded: an instance is done when its last call was served (+ half a
    round trip) and its last container exited, in time when that is by the deadline, every
    task was stopped and no ECS step failed. A task is stopped by the deadline when its
    StopTask was served, or its container exited, by then."""
    s, half = scenario, scenario.rtt / 2
    done = [-math.inf] * s.instances
    stopped = final_served = 0
    for gone in endpoint.exits:
        done[gone.instance] = max(done[gone.instance], gone.at)
        stopped += gone.at <= s.deadline
    sent_by: Dict[str, int] = {}
    for call in endpoint.calls:
        sent_by[call.action] = sent_by.get(call.action, 0) + 1
        if call.instance < 0 or not call.served:
            continue
        back = call.at + half
        done[call.instance] = max(done[call.instance], back)
        if call.action == "StopTask" and back <= s.deadline:
            stopped += 1
            final_served += call.at >= s.final_at
    finished = [
        d if not failed[n] and endpoint.fleet.running(n) == 0 and d <= s.deadline else math.inf
        for n, d in enumerate(done)
    ]
    return Outcome(
        policy=f"{policy}, live",
        instances=s.instances,
        **spread(finished),
        sent=len(endpoint.calls),
        needed=s.calls_needed(policy) * s.instances,
        first_give_up=None,
        finished=finished,
        stopped=stopped,
        final_served=final_served,
        final_tokens=final_tokens(s),
        sent_by=sent_by,
    )


def daemon_settings(
    scenario: Scenario, agent_url: str, policy: str = SHIPPED_API, docker_host: str = ""
) -> Dict[str, Any]:
    return {
        "deadline_margin": f"{scenario.margin:g}s",
        "rebalance": {"enabled": False},
        "scheduled_events": {"enabled": False},
        "load_balancer": {"enabled": False},
        "autoscaling": {"enabled": False},
        "ecs": {
            "enabled": True,
            "agent_url": agent_url,
            "stop_timeout": f"{scenario.stop_timeout:g}s",
            "stop_via": "runtime" if policy == "runtime" else "api",
            **({"docker_host": docker_host} if docker_host else {}),
        },
        "hooks": [
            {
                "name": "work",
                "command": ["sleep", f"{scenario.hooks:g}"],
                "actions": ["terminate"],
                "timeout": f"{scenario.hooks + 20:g}s",
            }
        ],
        "log": {"level": "info", "format": "json"},
    }


def daemon_env(endpoint_url: str) -> Dict[str, str]:
    """Dummy credentials, no shared AWS config, every AWS call to `endpoint_url`."""
    return {
        **AWS_ENV,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_ENDPOINT_URL": endpoint_url,
    }


def log_events(daemon: DaemonProcess) -> List[Dict[str, Any]]:
    events = []
    for line in daemon.log_path.read_text(errors="replace").splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events


def _daemons_cpu(daemons: List[DaemonProcess]) -> float:
    return sum(cpu_seconds(d.pid, children=True) for d in daemons)


def _sleep_jitter(stop: threading.Event, out: List[float]) -> None:
    while not stop.is_set():
        before = time.monotonic()
        time.sleep(0.01)
        out.append((time.monotonic() - before - 0.01) * 1000)


def _cpu_trace(stop: threading.Event, daemons: List[DaemonProcess], out: List[float]) -> None:
    """The daemons' CPU (s) in each second of the storm."""
    last = _daemons_cpu(daemons)
    while not stop.wait(1.0):
        now = _daemons_cpu(daemons)
        out.append(now - last)
        last = now


def run_live(scenario: Scenario, log: Any = print, policy: str = SHIPPED_API) -> LiveRun:
    """One storm with real daemons; `scenario` gives the sizes, times and buckets, `policy`
    "paced" (the daemons' `ecs.stop_via: api`) or "runtime" (`ecs.stop_via: runtime`,
    against the endpoint's Docker Engine API)."""
    s = scenario
    fleet = Fleet(s.instances, s.tasks, s.standalone, s.restarting if policy == "runtime" else 0)
    endpoint = StormEndpoint(fleet, s.buckets, s.rtt, s.shutdown)
    docker_host = "tcp://" + endpoint.url.split("://", 1)[1]
    sims: List[ImdsSimulator] = []
    daemons: List[DaemonProcess] = []
    logs: List[List[Dict[str, Any]]] = []
    try:
        for n in range(s.instances):
            sim = ImdsSimulator(instance_id=f"i-{n:017x}").start()
            sim.set_hibernation_configured(False)
            sims.append(sim)
            daemon = DaemonProcess(
                sim.endpoint,
                daemon_settings(s, f"{endpoint.url}/agent/{n}", policy, docker_host),
                env=daemon_env(endpoint.url),
                poll_interval=f"{s.poll:g}s",
            )
            daemons.append(daemon.start())
            time.sleep(random.uniform(0.1, 0.3))  # start-up spread, phases spread too
        began = time.monotonic()
        wait_until(
            lambda: (
                all(sim.count(path=INSTANCE_ACTION) > 0 for sim in sims)
                and endpoint.agent_asks >= s.instances
            ),
            120,
            "every daemon's first poll and agent discovery",
            pause=0.2,
        )
        for daemon in daemons:
            daemon.check_alive()
        start_cpu = _daemons_cpu(daemons)
        log(f"  {s.instances} daemons up ({time.monotonic() - began:.1f} s after the last start)")
        time.sleep(2 * s.poll)  # settle: start-up done, polls at their own phases
        time.sleep(1.0 - time.time() % 1.0)  # on a whole second: IMDS times have no fraction
        load_before = os.getloadavg()[0]
        raised_wall, raised = time.time(), time.monotonic()
        notice = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(round(raised_wall) + s.lead))
        endpoint.arm(raised)
        cpu_before, world_before = _daemons_cpu(daemons), _own_cpu()
        for sim in sims:
            sim.set_instance_action("terminate", notice)
        stop, jitter, per_second = threading.Event(), [], []  # type: ignore[var-annotated]
        samplers = [
            threading.Thread(target=_sleep_jitter, args=(stop, jitter), daemon=True),
            threading.Thread(target=_cpu_trace, args=(stop, daemons, per_second), daemon=True),
        ]
        for sampler in samplers:
            sampler.start()
        lead = round(raised_wall) + s.lead - raised_wall
        time.sleep(max(0.0, raised + lead - s.margin + 2.0 - time.monotonic()))
        wall = time.monotonic() - raised
        daemon_cpu, world_cpu = _daemons_cpu(daemons) - cpu_before, _own_cpu() - world_before
        stop.set()
        for sampler in samplers:
            sampler.join()
        load_after = os.getloadavg()[0]
        for daemon in daemons:
            daemon.check_alive()
    finally:
        for daemon in daemons:
            if daemon.proc is not None and daemon.proc.poll() is None:
                daemon.proc.terminate()
        for daemon in daemons:
            daemon.stop()
            logs.append(log_events(daemon) if daemon.log_path.exists() else [])
            daemon.cleanup()
        endpoint.close()
        for sim in sims:
            sim.stop()
    seen = [_seen(sim, raised) for sim in sims]
    first = [math.inf] * s.instances
    for call in endpoint.calls:
        if call.instance >= 0:
            first[call.instance] = min(first[call.instance], call.at - s.rtt / 2)
    failed_events: Dict[str, int] = {}
    failed = []
    said = ""  # what the first failed step said (the API's words)
    for events in logs:
        mine = [e for e in events if e.get("event") in FAILED_EVENTS]
        for event in mine:
            failed_events[event["event"]] = failed_events.get(event["event"], 0) + 1
            said = said or str(event.get("message", ""))
        failed.append(bool(mine))
    return LiveRun(
        outcome=outcome_of(replace(s, lead=lead), endpoint, failed, policy),
        seen=seen,
        lag=[f - w for f, w in zip(first, seen)],
        failed_events=failed_events,
        daemon_cpu=daemon_cpu,
        wall=wall,
        world_cpu=world_cpu,
        start_cpu=start_cpu,
        jitter=jitter,
        load=(load_before, load_after),
        agent_asks=endpoint.agent_asks,
        extra={"lead": lead, "calls": endpoint.calls, "said": said, "per_second": per_second},
    )


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _seen(sim: ImdsSimulator, since: float) -> float:
    for mono, method, path, status in sim.requests_log:
        if mono > since and method == "GET" and path == INSTANCE_ACTION and status == 200:
            return mono - since
    return math.inf


# --------------------------------------------------------------------- report


def compare(
    scenario: Scenario, live: LiveRun, seeds: int = 5, policy: str = SHIPPED_API
) -> Tuple[Outcome, str]:
    """The simulation of the same scenario (seed 1; in-time range over `seeds`) and a table."""
    sim = simulate(scenario, policy)
    shares = [simulate(scenario, policy, seed).in_time for seed in range(1, seeds + 1)]
    o = live.outcome

    def when(x: float) -> str:
        return "—" if x == math.inf else f"{x:.1f}"

    rows = [
        ("share in time", f"{o.in_time:.0%}", f"{sim.in_time:.0%} (seeds 1-{seeds}: "
         f"{min(shares):.0%}-{max(shares):.0%})"),
        ("p50 / p99 done (s after the raise)", f"{when(o.p50)} / {when(o.p99)}",
         f"{when(sim.p50)} / {when(sim.p99)}"),
        ("calls sent ÷ needed", f"{o.amplification:.2f}", f"{sim.amplification:.2f}"),
        ("tasks stopped by the deadline", f"{o.stopped} / {scenario.tasks * scenario.instances}",
         f"{sim.stopped}"),
        ("final stop's StopTask served / most possible",
         f"{o.final_served} / {o.final_tokens:.0f}", f"{sim.final_served}"),
    ]  # fmt: skip
    for action in sorted(set(o.sent_by) | set(sim.sent_by)):
        rows.append(
            (f"{action} sent", str(o.sent_by.get(action, 0)), str(sim.sent_by.get(action, 0)))
        )
    lines = ["| figure | live | simulation |", "|---|---:|---:|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return sim, "\n".join(lines)


def describe(live: LiveRun) -> str:
    seen = [x for x in live.seen if x < math.inf]
    lag = [x for x in live.lag if x < math.inf]
    cores = os.cpu_count() or 1
    trace = live.extra.get("per_second") or [0.0]
    busiest = max(trace) / cores
    return (
        f"notice seen: p50 {fmt(percentile(seen, 50))} s, max {fmt(max(seen))} s after the raise; "
        f"seen → first ECS call: p50 {fmt(percentile(lag, 50))} s, max {fmt(max(lag))} s\n"
        f"daemons' CPU in the storm: {live.daemon_cpu:.1f} s in {live.wall:.1f} s wall "
        f"({live.daemon_cpu / live.wall / cores:.0%} of {cores} cores; busiest second "
        f"{busiest:.0%}, first 10 s {sum(trace[:10]) / 10 / cores:.0%}); this process (endpoint, "
        f"simulators): {live.world_cpu:.1f} s; daemons' start-up: {live.start_cpu:.1f} s\n"
        f"a 10 ms sleep woke late by p50 {fmt(percentile(live.jitter, 50))} ms, "
        f"p99 {fmt(percentile(live.jitter, 99))} ms; load {live.load[0]:.2f} → {live.load[1]:.2f}; "
        f"failed-step events {live.failed_events or 'none'}; agent asked {live.agent_asks} times"
        + (f"\nfirst failure said: {live.extra['said']}" if live.extra.get("said") else "")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=30)
    parser.add_argument(
        "--per",
        default="1000,100,100x2",
        help="buckets scaled by instances / per (xF: refilled F times as fast)",
    )
    parser.add_argument("--lead", type=float, default=LIVE.lead)
    parser.add_argument(
        "--policies",
        default=f"{SHIPPED_API},runtime",
        help="paced (ecs.stop_via: api) and/or runtime (ecs.stop_via: runtime)",
    )
    parser.add_argument("--dump", default="", help="write each run's calls to DUMP-<per>.json")
    args = parser.parse_args()
    for per, faster in scalings(args.per):
        for policy in args.policies.split(","):
            scenario = scaled(args.instances, per, args.lead, faster)
            print(
                f"{args.instances} daemons, buckets x {args.instances}/{per}, "
                f"refill x {faster:g}, {policy}:"
            )
            live = run_live(scenario, policy=policy)
            _, text = compare(scenario, live, policy=policy)
            print(text)
            print(describe(live), flush=True)
            if args.dump:
                with open(f"{args.dump}-{per}x{faster:g}-{policy}.json", "w") as out:
                    calls = [c.__dict__ for c in live.extra["calls"]]
                    json.dump({"seen": live.seen, "lag": live.lag, "calls": calls}, out)


if __name__ == "__main__":
    main()
