"""sd_notify: READY=1, STATUS=, WATCHDOG=1, STOPPING=1 to the service manager.

Uses systemd-python's `daemon.notify` when it is importable; otherwise speaks the plain
NOTIFY_SOCKET datagram protocol itself (a pip install without libsystemd headers). With no
NOTIFY_SOCKET (not under systemd, or tests) every call is a cheap no-op.
"""

from __future__ import annotations

import importlib
import os
import socket
from typing import Callable, Optional


def _systemd_python() -> Optional[Callable[[str], bool]]:
    try:
        # By name: the repository's own systemd/ folder (unit files) must not be mistaken
        # for the library by the type checker.
        daemon = importlib.import_module("systemd.daemon")
    except ImportError:
        return None
    notify = getattr(daemon, "notify", None)
    return notify if callable(notify) else None


class Notifier:
    def __init__(self, socket_path: Optional[str] = None) -> None:
        self.address = socket_path if socket_path is not None else os.environ.get("NOTIFY_SOCKET")
        self._sock: Optional[socket.socket] = None
        self._library = _systemd_python() if socket_path is None else None
        self._last_status: Optional[str] = None

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def send(self, message: str) -> bool:
        if not self.address:
            return False
        if self._library is not None:
            return bool(self._library(message))
        return self._send_datagram(message)

    def _send_datagram(self, message: str) -> bool:
        assert self.address
        # An address starting with "@" is in the abstract namespace.
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(message.encode("utf-8"), target)
            return True
        except OSError:
            return False

    def ready(self, status: str) -> None:
        self.send(f"READY=1\nSTATUS={status}\nMAINPID={os.getpid()}")
        self._last_status = status

    def status(self, status: str) -> None:
        if status != self._last_status:  # most polls change nothing: skip the syscall
            self._last_status = status
            self.send(f"STATUS={status}")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def reloading(self) -> None:
        self.send("RELOADING=1")

    def stopping(self) -> None:
        self.send("STOPPING=1")

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
