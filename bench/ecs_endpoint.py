"""An ECS endpoint that, like AWS and unlike moto, serves requests concurrently.

moto's server handles one request at a time and spends ~7 ms of CPU on each StopTask, so
with any round trip `rtt` no client, however concurrent, can stop 100 tasks on it faster
than 100 x 7 ms: its ceiling for "one by one / concurrent" is (rtt + 7 ms + client) / 7 ms,
about 5x at rtt = 30 ms. This endpoint answers StopTask from a thread per connection after
waiting `rtt` (the regional round trip and AWS's own work, which overlap across calls), with
keep-alive, as AWS does. It answers StopTask only; the world is whatever ARNs it is sent.
"""

from __future__ import annotations

import json
import os
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator, Optional

from bench.loopback import QuietHandler, serve


class JsonHandler(QuietHandler):
    """Answers in AWS's JSON protocol, kept alive, as AWS endpoints do."""

    protocol_version = "HTTP/1.1"
    # Head and body in one write: two small writes on a kept-alive connection meet
    # Nagle and delayed ACK, ~40 ms a call that no real endpoint adds.
    wbufsize = 1 << 16

    def send_json(self, status: int, body: Any) -> None:
        self.reply(status, json.dumps(body).encode(), "application/x-amz-json-1.1")


class ConcurrentEcs:
    def __init__(self, rtt: float) -> None:
        self.rtt = rtt
        self.calls = 0
        self.peak = 0  # most calls in flight at once
        self._in_flight = 0
        self._lock = threading.Lock()
        endpoint = self

        class Handler(JsonHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                request = json.loads(self.rfile.read(length) or b"{}")
                target = self.headers.get("X-Amz-Target", "")
                endpoint.enter()
                try:
                    time.sleep(endpoint.rtt)
                finally:
                    endpoint.leave()
                if not target.endswith(".StopTask"):
                    self.send_json(400, {"__type": "InvalidParameterException", "message": target})
                    return
                task = {
                    "taskArn": request.get("task", ""),
                    "clusterArn": request.get("cluster", ""),
                    "lastStatus": "RUNNING",
                    "desiredStatus": "STOPPED",
                    "stoppedReason": request.get("reason", ""),
                }
                self.send_json(200, {"task": task})

        self.server, self.url = serve(Handler)

    def enter(self) -> None:
        with self._lock:
            self.calls += 1
            self._in_flight += 1
            self.peak = max(self.peak, self._in_flight)

    def leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def endpoint_url(url: str) -> Iterator[None]:
    """AWS clients made inside the block talk to `url`."""
    before: Optional[str] = os.environ.get("AWS_ENDPOINT_URL")
    os.environ["AWS_ENDPOINT_URL"] = url
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("AWS_ENDPOINT_URL", None)
        else:
            os.environ["AWS_ENDPOINT_URL"] = before
