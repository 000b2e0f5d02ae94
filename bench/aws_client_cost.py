"""Measure what warming the AWS clients at start would buy and cost.

    python -m bench.aws_client_cost [--runs 3]     (also part of `python -m bench`, section ecs)

For each mode a fresh interpreter imports what the idle daemon with ECS on imports
(`requests`, for discovery), then either creates the ECS and EC2 clients at once ("warm")
or not ("lazy"), and reports its idle RSS; then it times the first ListTasks after a
"notice" (for "lazy" that includes importing boto3 and creating the client). moto's server
answers the call; nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Dict

CHILD = r"""
import json, os, sys, time
sys.path.insert(0, sys.argv[2])
def rss_mb():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
import requests  # discovery
from spotwatch.parts.awsapi.clients import AwsClients
clients = AwsClients(region="us-east-1")
if sys.argv[1] == "warm":
    clients.ecs(); clients.ec2()
idle = rss_mb()
began = time.perf_counter()
clients.ecs().list_tasks(cluster="bench")
first = time.perf_counter() - began
print(json.dumps({"idle_rss_mb": idle, "first_call_ms": first * 1000}))
"""


def measure(mode: str) -> Dict[str, float]:
    """One fresh interpreter in `mode` ("lazy" or "warm"), against the AWS endpoint named by
    AWS_ENDPOINT_URL (moto's server), on a cluster named "bench" that must exist."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run(
        [sys.executable, "-c", CHILD, mode, root],
        capture_output=True,
        text=True,
        check=True,
    )
    answer: Dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return answer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    from bench.common import MotoProcess

    moto = MotoProcess()
    try:
        import boto3

        boto3.client("ecs", region_name="us-east-1").create_cluster(clusterName="bench")
        for mode in ("lazy", "warm"):
            rows = [measure(mode) for _ in range(args.runs)]
            rss = sorted(r["idle_rss_mb"] for r in rows)[len(rows) // 2]
            first = sorted(r["first_call_ms"] for r in rows)[len(rows) // 2]
            print(f"{mode}: idle RSS {rss:.0f} MB, first ListTasks after a notice {first:.0f} ms")
    finally:
        moto.close()


if __name__ == "__main__":
    main()
