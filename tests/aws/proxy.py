"""A recording endpoint in front of moto's server: it forwards every call, except that it can
answer an operation with throttling a number of times first, hang on it (read the request,
never answer) or hold its answer a while, and it can play ECS tasks that are stopping
(moto stops a task at once: its lastStatus is STOPPED the moment StopTask returns; a real
task runs on for its stop timeout). It records each call's operation and when it came, so a
test can assert which calls were made and in what order."""

from __future__ import annotations

import json
import threading
import time
from typing import Any, Dict, List, Set, Tuple
from urllib.parse import parse_qs

import requests
from awshelpers import QuietHandler, serve_in_thread

ECS_THROTTLED = b'{"__type": "ThrottlingException", "message": "Rate exceeded"}'
EC2_THROTTLED = (
    b"<Response><Errors><Error><Code>RequestLimitExceeded</Code>"
    b"<Message>Request limit exceeded.</Message></Error></Errors>"
    b"<RequestID>00000000-0000-0000-0000-000000000000</RequestID></Response>"
)


def operation_of(headers: Any, body: bytes) -> str:
    """`StopTask` from ECS's JSON target header, `StopInstances` from EC2's query body."""
    target = headers.get("X-Amz-Target") or ""
    if target:
        return str(target.rsplit(".", 1)[-1])
    found = parse_qs(body.decode("utf-8", "replace")).get("Action") or [""]
    return found[0]


class Proxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.calls: List[Tuple[str, float]] = []  # (operation, monotonic time)
        self.throttle: Dict[str, int] = {}  # operation -> throttled answers still to give
        self.hang: Set[str] = set()
        self.delay: Dict[str, float] = {}  # operation -> seconds its answer is held
        # Task ARN -> monotonic moment until which DescribeTasks says it is still RUNNING.
        self.stopping: Dict[str, float] = {}
        self._closing = threading.Event()
        self._lock = threading.Lock()
        proxy = self

        class Handler(QuietHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                operation = operation_of(self.headers, body)
                with proxy._lock:
                    proxy.calls.append((operation, time.monotonic()))
                    throttled = proxy.throttle.get(operation, 0) > 0
                    if throttled:
                        proxy.throttle[operation] -= 1
                if operation in proxy.hang:
                    proxy._closing.wait(30)
                    self.close_connection = True
                    return
                if operation in proxy.delay:
                    proxy._closing.wait(proxy.delay[operation])
                if throttled:
                    json_api = bool(self.headers.get("X-Amz-Target"))
                    self.reply(
                        400 if json_api else 503,
                        ECS_THROTTLED if json_api else EC2_THROTTLED,
                        "application/x-amz-json-1.1" if json_api else "text/xml",
                    )
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                answer = requests.post(
                    proxy.upstream + self.path, data=body, headers=headers, timeout=30
                )
                kind = answer.headers.get("Content-Type", "application/octet-stream")
                content = answer.content
                if operation == "DescribeTasks" and answer.status_code == 200:
                    content = proxy.still_running(content)
                self.reply(answer.status_code, content, kind)

        self._server, self.url = serve_in_thread(Handler)

    def still_running(self, content: bytes) -> bytes:
        """A DescribeTasks answer with the tasks that are stopping shown as RUNNING."""
        now = time.monotonic()
        with self._lock:
            running = {arn for arn, until in self.stopping.items() if now < until}
        if not running:
            return content
        answer = json.loads(content)
        for task in answer.get("tasks", []):
            if task.get("taskArn") in running:
                task["lastStatus"] = "RUNNING"
        return json.dumps(answer).encode()

    def count(self, operation: str) -> int:
        with self._lock:
            return sum(1 for op, _ in self.calls if op == operation)

    def operations(self) -> List[str]:
        with self._lock:
            return [op for op, _ in self.calls]

    def close(self) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
