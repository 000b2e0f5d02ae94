"""Benchmark: StopTask for 100 tasks on moto's server, concurrently vs one by one; and the
ECS stop step's wall time as the number of tasks grows. Part of `python -m bench`; alone:

    python -m bench.ecs_stop [--tasks 100] [--workers 16] [--rounds 3] [--rtt-ms 0,30]

moto's server runs in a process of its own (dummy credentials, nothing leaves the machine).
moto spends a few ms of CPU per call, one call at a time, so on moto alone concurrency gains
little; `--rtt-ms` adds a network round trip to each call (a real regional endpoint: tens
of ms), which is where concurrency pays.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any, Dict, List, Optional, Tuple

from bench.common import MotoProcess, cpu_seconds
from bench.ecs_endpoint import ConcurrentEcs, endpoint_url

_instances = 0
TASK_ARN = "arn:aws:ecs:us-east-1:123456789012:task/bench"


def world(tasks: int, cluster: str) -> Tuple[str, List[str]]:
    """A cluster with one container instance running `tasks` standalone tasks: (its ARN,
    the task ARNs)."""
    import boto3

    ec2 = boto3.client("ec2")
    setup = boto3.client("ecs")
    setup.register_task_definition(
        family="app", containerDefinitions=[{"name": "app", "image": "busybox", "memory": 1}]
    )
    instance = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1)
    document = json.dumps({"instanceId": instance["Instances"][0]["InstanceId"]})
    setup.create_cluster(clusterName=cluster)
    answer = setup.register_container_instance(
        cluster=cluster,
        instanceIdentityDocument=document,
        totalResources=[
            {"name": "CPU", "type": "INTEGER", "integerValue": 1_000_000},
            {"name": "MEMORY", "type": "INTEGER", "integerValue": 1_000_000},
        ],
    )
    container_instance = answer["containerInstance"]["containerInstanceArn"]
    arns: List[str] = []
    while len(arns) < tasks:
        count = min(10, tasks - len(arns))
        ran = setup.run_task(cluster=cluster, taskDefinition="app", count=count)
        arns += [t["taskArn"] for t in ran["tasks"]]
    if len(arns) != tasks:
        raise RuntimeError(f"moto ran {len(arns)} of {tasks} tasks")
    return container_instance, arns


def client_with_rtt(rtt: float, operation: str = "") -> Any:
    """The ECS clients spotwatch uses (its own retries, a pool of 16), each call (or only
    `operation`'s) waiting `rtt` seconds more before its request goes out."""
    from spotwatch.parts.awsapi.clients import AwsClients

    clients = AwsClients(region="us-east-1")
    client = clients.ecs()
    if rtt:
        event = "before-send.ecs" + (f".{operation}" if operation else "")
        client.meta.events.register(event, lambda **_: time.sleep(rtt))
    client.list_clusters()  # connection and credentials warm
    return clients


def stop_comparison(
    tasks: int, workers: int, rounds: int, rtt: float, moto_pid: Optional[int] = None
) -> Dict[str, List[float]]:
    """Seconds for `stop_tasks` over `tasks` tasks on moto, with `workers` threads and with
    one; with `moto_pid`, also moto's own CPU seconds during each concurrent run ("moto cpu":
    the floor under the concurrent time, since moto serves one request at a time)."""
    from spotwatch.parts.awsapi.bounded import within
    from spotwatch.parts.ecs.steps import stop_tasks

    client = client_with_rtt(rtt, "StopTask").bounded(within(600))
    results: Dict[str, List[float]] = {"concurrent": [], "one by one": [], "moto cpu": []}
    for n in range(rounds):
        for mode, count in (("concurrent", workers), ("one by one", 1)):
            cluster = f"cmp-{rtt * 1000:.0f}ms-{n}-{count}-{time.monotonic_ns()}"
            _, arns = world(tasks, cluster)
            moto_before = cpu_seconds(moto_pid) if moto_pid else 0.0
            began = time.perf_counter()
            stopped, failed = stop_tasks(client, cluster, arns, "bench", workers=count)
            results[mode].append(time.perf_counter() - began)
            if moto_pid and mode == "concurrent":
                results["moto cpu"].append(cpu_seconds(moto_pid) - moto_before)
            if len(stopped) != tasks or failed:
                raise RuntimeError(f"stopped {len(stopped)} of {tasks}: {failed[:1]}")
    return results


def stop_comparison_concurrent_endpoint(
    tasks: int, workers: int, rounds: int, rtt: float
) -> Dict[str, List[float]]:
    """As `stop_comparison`, against `ConcurrentEcs` (an endpoint serving calls at once, as
    AWS does), `rtt` seconds per call; "peak" is the most calls it saw in flight at once."""
    from spotwatch.parts.awsapi.bounded import within
    from spotwatch.parts.awsapi.clients import AwsClients
    from spotwatch.parts.ecs.steps import stop_tasks

    endpoint = ConcurrentEcs(rtt)
    try:
        with endpoint_url(endpoint.url):
            clients = AwsClients(region="us-east-1")
            clients.ecs()  # made while the endpoint variable is set
            client = clients.bounded(within(600))
        results: Dict[str, List[float]] = {"concurrent": [], "one by one": [], "peak": []}
        for n in range(rounds):
            for mode, count in (("concurrent", workers), ("one by one", 1)):
                arns = [f"{TASK_ARN}/{n}{i:04d}" for i in range(tasks)]
                endpoint.peak = 0
                began = time.perf_counter()
                stopped, failed = stop_tasks(client, "bench", arns, "bench", workers=count)
                results[mode].append(time.perf_counter() - began)
                if mode == "concurrent":
                    results["peak"].append(float(endpoint.peak))
                if len(stopped) != tasks or failed:
                    raise RuntimeError(f"stopped {len(stopped)} of {tasks}: {failed[:1]}")
        return results
    finally:
        endpoint.close()


def stop_step(tasks: int, rtt: float) -> float:
    """Seconds for the ECS stop step (`ecs.stop: standalone`: ListTasks, DescribeTasks,
    StopTask for each) over `tasks` tasks, every call `rtt` seconds longer."""
    from spotwatch.config.schema import Config
    from spotwatch.detection.notices import now_notice
    from spotwatch.parts.ecs.agent import AgentInfo, EcsTarget
    from spotwatch.parts.ecs.steps import EcsStopStep
    from spotwatch.response.deadline import NoticeClock
    from spotwatch.response.plan import StepContext
    from spotwatch.state.schema import OK

    cluster = f"step-{tasks}-{time.monotonic_ns()}"
    container_instance, _ = world(tasks, cluster)
    info = AgentInfo(cluster, container_instance)
    settings = Config().ecs
    clients = client_with_rtt(rtt)
    target = EcsTarget(settings, clients, fetch=lambda url, timeout: info)
    step = EcsStopStep(target, settings)
    notice = now_notice("terminate", "instance-action", wall=time.time() + 120)
    ctx = StepContext(clock=NoticeClock(notice, 10.0), instance_id="i-bench", dry_run=False)
    began = time.perf_counter()
    outcome = step.run(ctx)
    took = time.perf_counter() - began
    if outcome.status != OK or f"stopped {tasks} " not in outcome.detail:
        raise RuntimeError(f"ECS stop step: {outcome.status}: {outcome.detail}")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rtt-ms", default="0,30", help="round trips to add, comma-separated")
    args = parser.parse_args()
    moto = MotoProcess()
    try:
        for rtt in (float(x) / 1000 for x in args.rtt_ms.split(",")):
            results = stop_comparison(args.tasks, args.workers, args.rounds, rtt)
            print(f"added round trip per StopTask: {rtt * 1000:.0f} ms")
            for mode, times in results.items():
                print(
                    f"  {mode:>11}: {args.tasks} StopTask in {statistics.median(times):.3f} s "
                    f"median (runs: {', '.join(f'{t:.3f}' for t in times)})"
                )
            ratio = statistics.median(results["one by one"]) / statistics.median(
                results["concurrent"]
            )
            print(f"  concurrent ({args.workers} workers) is {ratio:.1f}x faster")
    finally:
        moto.close()


if __name__ == "__main__":
    main()
