"""Benchmark: one instance's ECS tasks stopped by the real daemon through the container
runtime (a real dockerd, a container per task that traps SIGTERM) against StopTask through
moto's server, in one run. Part of `python -m bench` (section `runtime`); alone:

    python -m bench.runtime_stop [--tasks 20] [--reps 3]

Each trial starts a daemon (`python -m spotwatch run`, poll 0.5 s, no hooks, `ecs.stop:
all`, no drain, no final stop) with the IMDS simulator and an ECS agent stand-in whose
/v1/tasks lists the tasks with their containers' DockerIds, raises a terminate notice, and
reads when the ECS stop step ended from its record in state.json: notice raised → step
ended, and notice seen (the simulator's answer that carried it) → step ended.
`ecs.stop_via: runtime`: the step ends once every container has exited (they exit at once
on SIGTERM); `api`: once moto has answered every StopTask (16 at a time). With StopTask
the containers have then still to be stopped, by the ECS agent once ECS tells it: after
each API trial the same containers are stopped at once through the same seam and timed
("containers"), the part of the agent's work that does not depend on how ECS reaches it.
The dockerd is the tests' (tests/dockerworld.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime
from typing import Any, Dict, List, Optional

from bench.common import (
    AWS_ENV,
    INSTANCE_ACTION,
    ROOT,
    DaemonProcess,
    MotoProcess,
    SimProcess,
    median,
    wait_until,
)
from bench.ecs_stop import world
from bench.startup import FakeAgent
from spotwatch.parts.runtime.engine import connect

sys.path.insert(0, str(ROOT / "tests"))  # the tests' Docker world: one for both
from dockerworld import DockerUnavailable, DockerWorld

STEP = "ecs:stop"


def daemon_settings(agent_url: str, via: str, docker_host: str) -> Dict[str, Any]:
    return {
        "ecs": {
            "enabled": True,
            "agent_url": agent_url,
            "drain": False,
            "stop": "all",
            "final_stop": False,
            "stop_timeout": "10s",
            "stop_via": via,
            "docker_host": docker_host,
        },
        "rebalance": {"enabled": False},
        "scheduled_events": {"enabled": False},
        "load_balancer": {"enabled": False},
        "autoscaling": {"enabled": False},
        "log": {"level": "warning", "format": "text"},
    }


def _step_record(daemon: DaemonProcess) -> Optional[Dict[str, Any]]:
    try:
        state = json.loads((daemon.folder / "state" / "state.json").read_text())
    except (FileNotFoundError, ValueError):
        return None
    for record in state.get("responses", {}).values():
        for step in record.get("steps", []):
            if step.get("name") == STEP and step.get("ended"):
                found: Dict[str, Any] = step
                return found
    return None


def _wall(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def trial(
    sim: SimProcess, docker: DockerWorld, moto_url: str, tasks: int, via: str, n: int
) -> Dict[str, float]:
    """One daemon, one notice: {"raised", "seen"} → the step ended, in seconds."""
    container_instance, arns = world(tasks, f"runtime-{via}-{n}-{time.monotonic_ns()}")
    docker.remove_all()
    names = [f"task-{i}" for i in range(tasks)]
    ids = docker.run_many(names)
    listed = [
        {
            "Arn": arn,
            "DesiredStatus": "RUNNING",
            "KnownStatus": "RUNNING",
            "Containers": [{"DockerId": cid, "Name": "app", "DockerName": name}],
        }
        for arn, cid, name in zip(arns, ids, names)
    ]
    agent = FakeAgent(arns[0].split("/")[-2], container_instance, listed)
    daemon = DaemonProcess(
        sim.endpoint,
        daemon_settings(agent.url, via, docker.host),
        env={**AWS_ENV, "AWS_ENDPOINT_URL": moto_url},
        poll_interval="0.5s",
    )
    try:
        sim.call("clear")
        daemon.start()
        polls = sim.count()
        wait_until(lambda: sim.count() > polls + 1, 60, "the daemon's first polls", pause=0.05)
        notice = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 120))
        raised = sim.call("raise", action="terminate", time=notice)
        wait_until(lambda: _step_record(daemon) is not None, 60, f"the {STEP} step", pause=0.05)
        record = _step_record(daemon)
        assert record is not None
        if record["status"] != "ok" or f"stopped {tasks} tasks" not in record["detail"]:
            raise RuntimeError(f"{via}: {record['status']}: {record['detail']}")
        if via == "runtime" and not all("TERM" in docker.record(name) for name in names):
            raise RuntimeError("runtime: a container got no SIGTERM")
        seen = next(
            real
            for _mono, real, method, path, status in sim.log(raised["mono"])
            if method == "GET" and path == INSTANCE_ACTION and status == 200
        )
        ended = _wall(record["ended"])
        found = {"raised": ended - raised["real"], "seen": ended - float(seen)}
        if via == "api":  # what the ECS agent then does: the same containers' stop
            found["containers"] = _stop_alone(docker, ids)
        return found
    finally:
        sim.call("clear")
        daemon.cleanup()
        agent.close()


def _stop_alone(docker: DockerWorld, ids: List[str]) -> float:
    """Seconds for the runtime to stop `ids` all at once, as the ECS agent does after a
    StopTask (the same seam spotwatch uses)."""
    engine, why = connect(docker.host)
    if engine is None:
        raise RuntimeError(why)
    try:
        began = time.monotonic()
        results = engine.stop(ids, 10)
        took = time.monotonic() - began
    finally:
        engine.close()
    if not all(r.exited for r in results):
        raise RuntimeError(f"containers not stopped: {[r.error for r in results if not r.exited]}")
    return took


def compare(
    sim: SimProcess, moto_url: str, tasks: int, reps: int, log: Any = print
) -> Dict[str, List[Dict[str, float]]]:
    """Trials of both ways, alternating; {"runtime": [...], "api": [...]}. Raises
    DockerUnavailable where no dockerd can be started."""
    docker = DockerWorld.start()
    log(f"  dockerd up and image imported in {docker.started_in:.1f} s")
    try:
        found: Dict[str, List[Dict[str, float]]] = {"runtime": [], "api": []}
        for n in range(reps):
            for via in found:
                found[via].append(trial(sim, docker, moto_url, tasks, via, n))
        return found
    finally:
        docker.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    sim, moto = SimProcess(), MotoProcess()
    try:
        found = compare(sim, moto.endpoint, args.tasks, args.reps)
    except DockerUnavailable as why:
        print(f"no Docker daemon: {why}")
        return
    finally:
        sim.close()
        moto.close()
    for via, trials in found.items():
        for moment in ("raised", "seen", "containers"):
            times = [t[moment] for t in trials if moment in t]
            if times:
                print(
                    f"{via:>7}: {moment} → {args.tasks} stopped: median "
                    f"{median(times):.2f} s ({', '.join(f'{x:.2f}' for x in times)})"
                )


if __name__ == "__main__":
    main()
