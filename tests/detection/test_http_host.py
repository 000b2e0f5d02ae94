"""The Host header our HTTP connection sends, read by a real server on a real socket."""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Iterator, List, Tuple

import pytest

from spotwatch.detection.http import Connection


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


class HeadRecorder:
    """Answers every request `200` with an empty body and keeps the request heads it read."""

    def __init__(self, family: socket.AddressFamily, host: str) -> None:
        self.heads: List[bytes] = []
        self._listener = socket.socket(family, socket.SOCK_STREAM)
        self._listener.bind((host, 0))
        self._listener.listen(1)
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):  # the listener closed under accept()
            conn, _ = self._listener.accept()
            with conn:
                buffer = b""
                while True:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                    while b"\r\n\r\n" in buffer:
                        head, buffer = buffer.split(b"\r\n\r\n", 1)
                        self.heads.append(head)
                        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    def host_headers(self) -> List[str]:
        return [
            line.split(b":", 1)[1].strip().decode()
            for head in self.heads
            for line in head.split(b"\r\n")[1:]
            if line.lower().startswith(b"host:")
        ]

    def close(self) -> None:
        self._listener.close()
        self._thread.join(timeout=5)


@pytest.fixture
def recorder_v6() -> Iterator[HeadRecorder]:
    if not _ipv6_loopback():
        pytest.skip("this machine has no IPv6 loopback (::1)")
    recorder = HeadRecorder(socket.AF_INET6, "::1")
    yield recorder
    recorder.close()


def _get(host: str, port: int) -> Tuple[int, bytes]:
    connection = Connection(host, port)
    try:
        answer = connection.request("GET", "/latest/meta-data/instance-id", {}, 2.0, 1024)
    finally:
        connection.close()
    return answer.status, answer.body


def test_an_ipv6_host_header_is_bracketed(recorder_v6: HeadRecorder) -> None:
    """IMDS's IPv6 endpoint is [fd00:ec2::254]; its Host header must carry the brackets
    (RFC 7230 5.4 with RFC 3986's IP-literal), here with the port since it is not 80."""
    assert _get("::1", recorder_v6.port) == (200, b"")
    assert recorder_v6.host_headers() == [f"[::1]:{recorder_v6.port}"]


def test_an_ipv4_host_header_names_the_port_when_not_80() -> None:
    recorder = HeadRecorder(socket.AF_INET, "127.0.0.1")
    try:
        assert _get("127.0.0.1", recorder.port) == (200, b"")
        assert recorder.host_headers() == [f"127.0.0.1:{recorder.port}"]
    finally:
        recorder.close()
