"""Benchmark: StopTask for 100 tasks on moto's server, concurrently vs one by one.

    python bench/ecs_stop.py [--tasks 100] [--workers 16] [--rounds 3] [--rtt-ms 0,30]

Starts moto's server on 127.0.0.1 in a process of its own (dummy credentials, nothing leaves
the machine), registers a container instance, runs the tasks, and times
`spotwatch.response.ecs.stop_tasks` with `workers` threads and with one. moto spends a few
ms of CPU per call, one call at a time, so on moto alone concurrency gains little; `--rtt-ms`
adds a network round trip to each StopTask (a real regional endpoint: tens of ms), which is
where concurrency pays.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from typing import Dict, List

# Run from a checkout: the spotwatch next to this folder, not an installed one.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rtt-ms", default="0,30", help="round trips to add, comma-separated")
    args = parser.parse_args()

    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
    )
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.environ["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{port}"
    try:
        wait_for(port)
        for rtt in (float(x) / 1000 for x in args.rtt_ms.split(",")):
            run(args.tasks, args.workers, args.rounds, rtt)
    finally:
        server.terminate()
        server.wait(10)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for(port: int) -> None:
    give_up = time.monotonic() + 30
    while time.monotonic() < give_up:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit("moto's server did not start")


def run(tasks: int, workers: int, rounds: int, rtt: float) -> None:
    import boto3

    from spotwatch.response.aws import AwsClients
    from spotwatch.response.ecs import stop_tasks

    ec2 = boto3.client("ec2")
    setup = boto3.client("ecs")
    setup.register_task_definition(
        family="app", containerDefinitions=[{"name": "app", "image": "busybox", "memory": 8}]
    )
    client = AwsClients().ecs()  # the client spotwatch uses: standard retries, pool of 16
    if rtt:
        # Each StopTask waits one round trip more before its request goes out.
        client.meta.events.register("before-send.ecs.StopTask", lambda **_: time.sleep(rtt))

    def world(cluster: str) -> List[str]:
        instance = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1)
        document = json.dumps({"instanceId": instance["Instances"][0]["InstanceId"]})
        setup.create_cluster(clusterName=cluster)
        setup.register_container_instance(cluster=cluster, instanceIdentityDocument=document)
        arns: List[str] = []
        while len(arns) < tasks:
            count = min(10, tasks - len(arns))
            answer = setup.run_task(cluster=cluster, taskDefinition="app", count=count)
            arns += [t["taskArn"] for t in answer["tasks"]]
        return arns

    client.list_clusters()  # connection and credentials warm for both modes alike
    results: Dict[str, List[float]] = {"concurrent": [], "one by one": []}
    for n in range(rounds):
        for mode, count in (("concurrent", workers), ("one by one", 1)):
            cluster = f"bench-{rtt * 1000:.0f}ms-{n}-{count}"
            arns = world(cluster)
            began = time.perf_counter()
            stopped, failed = stop_tasks(client, cluster, arns, "bench", workers=count)
            results[mode].append(time.perf_counter() - began)
            assert len(stopped) == tasks and not failed, failed
    print(f"added round trip per StopTask: {rtt * 1000:.0f} ms")
    for mode, times in results.items():
        print(
            f"  {mode:>11}: {tasks} StopTask in {statistics.median(times):.3f} s median "
            f"(runs: {', '.join(f'{t:.3f}' for t in times)})"
        )
    ratio = statistics.median(results["one by one"]) / statistics.median(results["concurrent"])
    print(f"  concurrent ({workers} workers) is {ratio:.1f}x faster")


if __name__ == "__main__":
    main()
