"""A minimal HTTP/1.1 keep-alive connection for talking to IMDS, and nothing else.

Why not `http.client`: it parses every answer's headers through the `email` package, which
made up about two thirds of a poll's CPU time (≈0.9 ms for the two GETs of a poll, measured
with cProfile). IMDS answers are tiny and plain: a status line, a few headers, a body with
Content-Length. This reads exactly that (and chunked or read-to-close bodies, to be safe),
with hard limits on header and body size, so a poll costs a fraction of that.
"""

from __future__ import annotations

import contextlib
import socket
import time
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

MAX_HEADER_BYTES = 16 * 1024


class HttpError(OSError):
    """The peer broke the protocol or the connection (always worth a fresh connection)."""


class StaleConnection(HttpError):
    """A kept-alive connection the peer had closed before our request: reconnect and resend."""


@dataclass(frozen=True)
class Response:
    status: int
    headers: Dict[str, str]  # lower-case names
    body: bytes
    will_close: bool


class Connection:
    """One TCP connection, reused across requests while the peer keeps it open."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._sock: Optional[socket.socket] = None
        self._buffer = b""
        self._ends = 0.0

    @property
    def is_open(self) -> bool:
        return self._sock is not None

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._buffer = b""

    def abort(self) -> None:
        """Wake a request blocked in a read from another thread: the read then fails as a
        connection closed by the peer (shutdown() wakes it; close() alone would not)."""
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def request(
        self,
        method: str,
        path: str,
        headers: Dict[str, str],
        timeout: float,
        max_body: int,
        *,
        body: bytes = b"",
    ) -> Response:
        """Send one request and read its answer; raises OSError (incl. HttpError, timeout)."""
        reused = self._sock is not None
        # The timeout bounds the whole exchange, not each read: a peer trickling bytes
        # cannot stretch a request past it.
        self._ends = time.monotonic() + timeout
        sock = self._open(timeout)
        sock.settimeout(timeout)
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self._host_header()}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        if body or method in ("PUT", "POST"):
            lines.append(f"Content-Length: {len(body)}")
        payload = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        try:
            sock.sendall(payload)
            head = self._read_head()
        except (HttpError, ConnectionError) as failure:
            if reused and not self._buffer:
                raise StaleConnection(str(failure) or "closed by peer") from None
            raise
        status, response_headers = _parse_head(head)
        body, will_close = self._read_body(response_headers, max_body)
        if will_close or response_headers.get("connection", "").lower() == "close":
            self.close()
            will_close = True
        return Response(status, response_headers, body, will_close)

    def _host_header(self) -> str:
        """An IPv6 address goes in brackets (RFC 7230 5.4, RFC 3986 3.2.2): a bare
        `fd00:ec2::254` cannot be told apart from a host followed by a port. The port is
        named when it is not HTTP's default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == 80 else f"{host}:{self.port}"

    # ----------------------------------------------------------------- reading

    def _open(self, timeout: float) -> socket.socket:
        if self._sock is None:
            sock = socket.create_connection((self.host, self.port), timeout=timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sock = sock
            self._buffer = b""
        return self._sock

    def _fill(self) -> None:
        assert self._sock is not None
        left = self._ends - time.monotonic()
        if left <= 0:
            raise socket.timeout("timed out")
        self._sock.settimeout(left)
        chunk = self._sock.recv(65536)
        if not chunk:
            raise HttpError("connection closed by peer")
        self._buffer += chunk

    def _read_head(self) -> bytes:
        while True:
            end = self._buffer.find(b"\r\n\r\n")
            if end >= 0:
                head, self._buffer = self._buffer[:end], self._buffer[end + 4 :]
                return head
            if len(self._buffer) > MAX_HEADER_BYTES:
                raise HttpError("response headers too large")
            self._fill()

    def _read_exact(self, size: int) -> bytes:
        while len(self._buffer) < size:
            self._fill()
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def _read_line(self) -> bytes:
        while True:
            end = self._buffer.find(b"\r\n")
            if end >= 0:
                line, self._buffer = self._buffer[:end], self._buffer[end + 2 :]
                return line
            if len(self._buffer) > MAX_HEADER_BYTES:
                raise HttpError("chunk header too long")
            self._fill()

    def _read_body(self, headers: Dict[str, str], max_body: int) -> Tuple[bytes, bool]:
        if headers.get("transfer-encoding", "").lower() == "chunked":
            return self._read_chunked(max_body), False
        length_text = headers.get("content-length")
        if length_text is None:  # the body runs to the end of the connection
            return self._read_to_close(max_body), True
        try:
            length = int(length_text)
        except ValueError:
            raise HttpError(f"bad Content-Length {length_text[:20]!r}") from None
        if length < 0 or length > max_body:
            raise HttpError(f"answer of {length} bytes is larger than {max_body}")
        return self._read_exact(length), False

    def _read_chunked(self, max_body: int) -> bytes:
        body = b""
        while True:
            size_text = self._read_line().split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise HttpError("bad chunk size") from None
            if size == 0:
                while self._read_line():  # trailers, up to the empty line
                    pass
                return body
            if len(body) + size > max_body:
                raise HttpError(f"answer larger than {max_body} bytes")
            body += self._read_exact(size)
            self._read_line()

    def _read_to_close(self, max_body: int) -> bytes:
        try:
            while len(self._buffer) <= max_body:
                self._fill()
        except HttpError:  # the close that ends the body
            body, self._buffer = self._buffer, b""
            return body
        raise HttpError(f"answer larger than {max_body} bytes")


def _parse_head(head: bytes) -> Tuple[int, Dict[str, str]]:
    text = head.decode("latin-1")
    status_line, _, rest = text.partition("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise HttpError(f"not an HTTP answer: {status_line[:40]!r}")
    headers: Dict[str, str] = {}
    for line in rest.split("\r\n") if rest else ():
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    keep_alive = parts[0] != "HTTP/1.0" or headers.get("connection", "").lower() == "keep-alive"
    if not keep_alive:
        headers["connection"] = "close"
    return int(parts[1]), headers
