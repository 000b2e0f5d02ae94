"""Start-up: process start -> first poll (the simulator's first GET of spot/instance-action)
and -> READY=1 on a NOTIFY_SOCKET we bind, as systemd would; with ECS off, and with ECS on
(a fake ECS agent introspection server here, moto's server for the AWS API)."""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
from typing import Any, Dict, List, Optional, Tuple

from bench.common import AWS_ENV, INSTANCE_ACTION, DaemonProcess, SimProcess, rss_mb
from bench.loopback import QuietHandler, serve


class FakeAgent:
    """The ECS agent's introspection API: GET /v1/metadata names the cluster and instance;
    GET /v1/tasks lists `tasks` (the agent's `{"Tasks": [...]}` entries, each with its
    containers' DockerIds), none unless given."""

    def __init__(
        self, cluster: str, container_instance_arn: str, tasks: Optional[List[Any]] = None
    ) -> None:
        answers = {
            "/v1/metadata": {
                "Cluster": cluster,
                "ContainerInstanceArn": container_instance_arn,
                "Version": "bench",
            },
            "/v1/tasks": {"Tasks": tasks or []},
        }

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                found = answers.get(self.path.split("?")[0])
                body = json.dumps(found).encode() if found else b""
                self.reply(200 if found else 404, body, "application/json")

        self.server, self.url = serve(Handler)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start_once(
    sim: SimProcess, *, agent_url: Optional[str] = None, aws_endpoint: Optional[str] = None
) -> Dict[str, float]:
    """{"first_poll", "ready"} in ms from just before the exec, and "rss" (MB) at READY."""
    folder = tempfile.mkdtemp(prefix="spotwatch-notify-")
    address = os.path.join(folder, "notify")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(address)
    settings: Dict[str, Any] = {}
    env = {"NOTIFY_SOCKET": address}
    if agent_url is not None:
        settings["ecs"] = {"enabled": True, "agent_url": agent_url, "region": "us-east-1"}
        env.update(AWS_ENV)
        if aws_endpoint:
            env["AWS_ENDPOINT_URL"] = aws_endpoint
    daemon = DaemonProcess(sim.endpoint, settings, env=env)
    try:
        daemon.start()
        listener.settimeout(30)
        ready_at = 0.0
        while not ready_at:
            message = listener.recv(4096).decode("utf-8", "replace")
            if "READY=1" in message.split("\n"):
                ready_at = time.monotonic()
        rss = rss_mb(daemon.pid)
        first = next(
            row[0]
            for row in sim.log(daemon.started)
            if row[2] == "GET" and row[3] == INSTANCE_ACTION
        )
        return {
            "first_poll": (first - daemon.started) * 1000,
            "ready": (ready_at - daemon.started) * 1000,
            "rss": rss,
        }
    finally:
        daemon.cleanup()
        listener.close()
        os.unlink(address)
        os.rmdir(folder)


def ecs_world() -> Tuple[str, str]:
    """A cluster with a container instance on moto (the environment points boto3 at it)."""
    from bench.ecs_stop import world

    cluster = f"startup-{time.monotonic_ns()}"
    container_instance, _ = world(1, cluster)
    return cluster, container_instance
