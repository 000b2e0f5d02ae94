"""sd_notify: READY=1, STATUS=, WATCHDOG=1, RELOADING=1, STOPPING=1 to the service manager.

Uses systemd-python's `daemon.notify` when it is importable; otherwise speaks the plain
NOTIFY_SOCKET datagram protocol itself (a pip install without libsystemd headers). With no
NOTIFY_SOCKET (not under systemd, or tests) every call is a cheap no-op.

The unit is `Type=notify` (docs/systemd.md): `systemctl start` returns once READY=1 came,
`ExecReload` sends SIGHUP, and the daemon brackets the reload with RELOADING=1 / READY=1.
RELOADING=1 carries MONOTONIC_USEC as well, which `Type=notify-reload` (systemd >= 253)
requires and older managers ignore, so the same daemon serves either unit type.
"""

from __future__ import annotations

import importlib
import os
import socket
import threading
import time
from typing import Callable, Optional

STATUS_MAX = 200  # systemctl shows one line; keep STATUS= short and single-line


def _systemd_python() -> Optional[Callable[[str], bool]]:
    try:
        # By name: the repository's own systemd/ folder (unit files) must not be mistaken
        # for the library by the type checker.
        daemon = importlib.import_module("systemd.daemon")
    except ImportError:
        return None
    notify = getattr(daemon, "notify", None)
    return notify if callable(notify) else None


def _one_line(text: str) -> str:
    """STATUS= ends at the first newline in the protocol: fold it into one short line."""
    flat = " ".join(text.split())
    return flat if len(flat) <= STATUS_MAX else flat[: STATUS_MAX - 1] + "…"


class Notifier:
    """Talks to $NOTIFY_SOCKET (or `socket_path`, for tests; then always the plain protocol)."""

    def __init__(self, socket_path: Optional[str] = None) -> None:
        self.address = socket_path if socket_path is not None else os.environ.get("NOTIFY_SOCKET")
        self._sock: Optional[socket.socket] = None
        self._library = _systemd_python() if socket_path is None else None
        self._last_status: Optional[str] = None
        self._lock = threading.Lock()  # the poll thread and shutdown may both send

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def send(self, message: str) -> bool:
        """Send one notification (newline-separated KEY=value lines); False when not sent."""
        if not self.address:
            return False
        if self._library is not None:
            try:
                return bool(self._library(message))
            except OSError:
                return False
        return self._send_datagram(message)

    def _send_datagram(self, message: str) -> bool:
        assert self.address
        # An address starting with "@" is in the abstract namespace.
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(
                        socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                    )
                self._sock.sendto(message.encode("utf-8"), target)
                return True
            except OSError:
                return False

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    def ready(self, status: str) -> None:
        """The first poll was tried: `systemctl start` may return now."""
        status = _one_line(status)
        self.send(f"READY=1\nSTATUS={status}")
        self._last_status = status

    def status(self, status: str) -> None:
        status = _one_line(status)
        if status != self._last_status:  # most polls change nothing: skip the syscall
            self._last_status = status
            self.send(f"STATUS={status}")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def reloading(self) -> None:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send(f"RELOADING=1\nMONOTONIC_USEC={usec}")

    def reloaded(self, status: Optional[str] = None) -> None:
        """The reload is over (applied or refused): back to READY, optionally a new status."""
        if status is None:
            self.send("READY=1")
            return
        status = _one_line(status)
        self._last_status = status
        self.send(f"READY=1\nSTATUS={status}")

    def stopping(self, status: str = "stopping; letting running hooks finish") -> None:
        self._last_status = _one_line(status)
        self.send(f"STOPPING=1\nSTATUS={self._last_status}")

    def watchdog_interval(self) -> Optional[float]:
        """WATCHDOG_USEC as seconds, when systemd asks for pings and they are for us."""
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        if not usec or (pid and pid != str(os.getpid())):
            return None
        try:
            return int(usec) / 1_000_000
        except ValueError:
            return None
