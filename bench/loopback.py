"""The benchmarks' stand-in endpoints (ECS, the ECS agent, load balancers, a webhook
receiver) are small HTTP servers on 127.0.0.1: one way to answer and one way to serve."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Tuple, Type


class QuietHandler(BaseHTTPRequestHandler):
    """Logs nothing; `reply` answers in one call."""

    def reply(self, status: int, data: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class ConcurrentServer(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default backlog of 5 drops some of many simultaneous connects, which
    # then wait for a 1 s SYN retransmit (16 at a time per client; N clients in a storm).
    request_queue_size = 1024


def serve(handler: Type[BaseHTTPRequestHandler]) -> Tuple[ConcurrentServer, str]:
    """A server with `handler` on a free loopback port, serving from a daemon thread; the
    caller shuts it down. Returns it and its base URL."""
    server = ConcurrentServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"
