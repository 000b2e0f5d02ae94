"""The simulators' HTTP plumbing: a keep-alive server that can hang, reset or fail a request
as the simulator's fault plan says, and otherwise hands each request to the simulator's
`answer` (simulator/service.py), sending its answer the way metadata services do.

Standard library only, like the rest of the simulator.
"""

import contextlib
import socket
import struct
import threading
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional, Set, Tuple
from urllib.parse import parse_qs, urlsplit

TOKEN_HEADER = "X-aws-ec2-metadata-token"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"

# status, body, content type, extra headers
Answer = Tuple[int, bytes, str, Dict[str, str]]

TEXT = "text/plain"


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # without the query
    query: Dict[str, List[str]]
    headers: Dict[str, str]  # lower-case names
    body: bytes

    def param(self, name: str) -> Optional[str]:
        """The query parameter's last value, or None."""
        values = self.query.get(name)
        return values[-1] if values else None


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

    def do_POST(self) -> None:
        self._serve("POST")

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.sim.verbose:
            super().log_message(format, *args)

    def _serve(self, method: str) -> None:
        sim = self.server.sim
        parts = urlsplit(self.path)
        path = parts.path
        body = self._read_body()  # leaves the connection clean for the next request
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
        else:
            headers = {name.lower(): value for name, value in self.headers.items()}
            request = Request(method, path, parse_qs(parts.query), headers, body)
            answer = sim.answer(request)
        status, data, content_type, extra = answer
        sim._record(method, path, status)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in extra.items():
            self.send_header(name, value)
        # Head and body in one write, as IMDS does: two small writes meet Nagle's algorithm
        # and the client's delayed ACK, adding ~40 ms to every answer.
        self._headers_buffer.append(b"\r\n" + data)  # type: ignore[attr-defined]
        self.flush_headers()

    def _read_body(self) -> bytes:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        return self.rfile.read(min(length, 1 << 20)) if length > 0 else b""


def phrase(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b"Error"
