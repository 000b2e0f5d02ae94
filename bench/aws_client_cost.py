"""Measure what warming the AWS clients at start would buy and cost.

    python bench/aws_client_cost.py [--runs 3]

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
import time

CHILD = r"""
import json, os, sys, time
sys.path.insert(0, sys.argv[2])
def rss_mb():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
import requests  # discovery
from spotwatch.response.aws import AwsClients
clients = AwsClients(region="us-east-1")
if sys.argv[1] == "warm":
    clients.ecs(); clients.ec2()
idle = rss_mb()
began = time.perf_counter()
clients.ecs().list_tasks(cluster="bench")
first = time.perf_counter() - began
print(json.dumps({"idle_rss_mb": idle, "first_call_ms": first * 1000}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_EC2_METADATA_DISABLED="true",
    )
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ["AWS_ENDPOINT_URL"] = f"http://{host}:{port}"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        import boto3

        boto3.client("ecs", region_name="us-east-1").create_cluster(clusterName="bench")
        for mode in ("lazy", "warm"):
            rows = []
            for _ in range(args.runs):
                done = subprocess.run(
                    [sys.executable, "-c", CHILD, mode, root],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
                time.sleep(0.1)
            rss = sorted(r["idle_rss_mb"] for r in rows)[len(rows) // 2]
            first = sorted(r["first_call_ms"] for r in rows)[len(rows) // 2]
            print(f"{mode}: idle RSS {rss:.0f} MB, first ListTasks after a notice {first:.0f} ms")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
