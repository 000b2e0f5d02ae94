"""The simulator's HTTP plumbing: a keep-alive server that can hang, reset or fail a request
as the simulator's fault plan says, and answers with IMDS's framing.

Standard library only, like the rest of the simulator.
"""

import contextlib
import socket
import struct
import threading
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, Optional, Set, Tuple
from urllib.parse import urlsplit

TOKEN_HEADER = "X-aws-ec2-metadata-token"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"

# status, body, content type, extra headers
Answer = Tuple[int, bytes, str, Dict[str, str]]

TEXT = "text/plain"


@dataclass
class Fault:
    kind: str  # "status" | "hang" | "reset"
    path: str  # prefix of the request path; "" matches every request
    remaining: Optional[int]  # None: until clear_faults()
    status: int = 0
    seconds: float = 0.0


@dataclass
class FaultPlan:
    """What the faults say to do with one request, decided once when it arrives."""

    hang: float = 0.0
    status: Optional[int] = None
    reset: bool = False


class Server(ThreadingHTTPServer):
    """ThreadingHTTPServer that remembers its open connections, so stop() can close idle
    keep-alive connections too, and can end a connection with a RST instead of a FIN."""

    daemon_threads = True
    # Handlers may be stuck in an injected hang; stop() must not wait for them.
    block_on_close = False

    def __init__(self, address: Tuple[str, int], sim: Any) -> None:
        self.sim = sim
        self._conn_lock = threading.Lock()
        self._open: Set[socket.socket] = set()
        self._to_reset: Set[socket.socket] = set()
        super().__init__(address, Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._conn_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def mark_reset(self, request: socket.socket) -> None:
        # SO_LINGER with a zero timeout turns close() into a RST.
        request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with self._conn_lock:
            self._to_reset.add(request)

    def shutdown_request(self, request: Any) -> None:
        with self._conn_lock:
            reset = request in self._to_reset
            self._to_reset.discard(request)
            self._open.discard(request)
        if reset:
            # Skip the graceful shutdown(SHUT_WR): it would send a FIN before the RST.
            self.close_request(request)
        else:
            super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._conn_lock:
            conns = list(self._open)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)  # wakes handler threads blocked in a read

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that hang up mid-request are routine here; keep stderr quiet.
        if self.sim.verbose:
            super().handle_error(request, client_address)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like IMDS
    server: Server

    def do_GET(self) -> None:
        self._serve("GET")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.sim.verbose:
            super().log_message(format, *args)

    def _serve(self, method: str) -> None:
        sim = self.server.sim
        path = urlsplit(self.path).path
        self._discard_body()  # leave the connection clean for the next request
        plan = sim._take_faults(path)
        wait = sim.delay + plan.hang
        if wait > 0 and sim._stopping.wait(wait):
            self.close_connection = True  # shutting down: drop the request unanswered
            return
        if plan.reset:
            sim._record(method, path, 0)
            self.server.mark_reset(self.connection)
            self.close_connection = True
            return
        if plan.status is not None:
            answer: Answer = (plan.status, phrase(plan.status), TEXT, {})
        elif method == "PUT":
            answer = sim._answer_put(
                path, self.headers.get(TTL_HEADER), "X-Forwarded-For" in self.headers
            )
        else:
            answer = sim._answer_get(path, self.headers.get(TOKEN_HEADER))
        status, body, content_type, headers = answer
        sim._record(method, path, status)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        # Head and body in one write, as IMDS does: two small writes meet Nagle's algorithm
        # and the client's delayed ACK, adding ~40 ms to every answer.
        self._headers_buffer.append(b"\r\n" + body)  # type: ignore[attr-defined]
        self.flush_headers()

    def _discard_body(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        if length > 0:
            self.rfile.read(length)


def phrase(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b"Error"
