"""A `logging.Handler` that writes to journald with structured fields.

Every record becomes one journal entry with MESSAGE, PRIORITY, SYSLOG_IDENTIFIER=spotwatch,
CODE_FILE/CODE_LINE/CODE_FUNC, LOGGER, THREAD_NAME and each field of `record.spotwatch`
(see `spotwatch.logevents.emit`) as SPOTWATCH_<NAME>: event -> SPOTWATCH_EVENT,
action -> SPOTWATCH_ACTION, hook -> SPOTWATCH_HOOK, ... so an operator can ask
`journalctl -u spotwatch SPOTWATCH_EVENT=notice` or `journalctl SPOTWATCH_HOOK=checkpoint`.

It goes through systemd-python's `journal.sendv` when that is importable; otherwise it speaks
journald's native protocol itself over the `/run/systemd/journal/socket` datagram socket:
`KEY=value` lines, and for a value holding a newline `KEY`, newline, the value's length as a
little-endian 64-bit integer, the value, newline. An entry too big for one datagram goes
the way libsystemd sends it: written to a sealed memfd whose descriptor is passed with
SCM_RIGHTS; if even that fails, MESSAGE is truncated to fit a datagram (and says so).
"""

from __future__ import annotations

import array
import errno
import fcntl
import importlib
import json
import logging
import os
import re
import socket
import struct
import threading
from typing import Any, Callable, Dict, List, Optional, Tuple

JOURNAL_SOCKET = "/run/systemd/journal/socket"
IDENTIFIER = "spotwatch"
# A datagram this size always fits the default socket buffers; bigger entries go by memfd.
DATAGRAM_MAX = 128 * 1024
# Never hand journald more than this of one message, whichever way it goes.
MESSAGE_MAX = 1024 * 1024
SEND_TIMEOUT = 1.0  # a stuck journald must not stall the poll loop for long

PRIORITIES = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}

Field = Tuple[str, bytes]


def priority(levelno: int) -> int:
    """The syslog priority for a logging level (levels between the named ones round up)."""
    for level in (logging.CRITICAL, logging.ERROR, logging.WARNING, logging.INFO):
        if levelno >= level:
            return PRIORITIES[level]
    return PRIORITIES[logging.DEBUG]


_NOT_NAME = re.compile(r"[^A-Z0-9_]")


def field_name(key: str) -> str:
    """`notice_time` -> `SPOTWATCH_NOTICE_TIME`: only A-Z, 0-9 and _, at most 64 characters."""
    name = _NOT_NAME.sub("_", key.upper())
    return ("SPOTWATCH_" + name)[:64]


def field_value(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, bool):
        return b"1" if value else b"0"
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, default=str, sort_keys=True).encode("utf-8")
    return str(value).encode("utf-8", "replace")


def encode(fields: List[Field]) -> bytes:
    """Serialize fields in journald's native protocol."""
    parts: List[bytes] = []
    for key, value in fields:
        name = key.encode("ascii")
        if b"\n" in value:
            parts.append(name + b"\n" + struct.pack("<Q", len(value)) + value + b"\n")
        else:
            parts.append(name + b"=" + value + b"\n")
    return b"".join(parts)


def decode(data: bytes) -> List[Field]:
    """The inverse of `encode` (for tests and for anyone reading a captured datagram)."""
    fields: List[Field] = []
    pos = 0
    while pos < len(data):
        newline = data.index(b"\n", pos)
        line = data[pos:newline]
        if b"=" in line:
            key, _, value = line.partition(b"=")
            fields.append((key.decode("ascii"), value))
            pos = newline + 1
        else:
            (size,) = struct.unpack("<Q", data[newline + 1 : newline + 9])
            start = newline + 9
            fields.append((line.decode("ascii"), data[start : start + size]))
            if data[start + size : start + size + 1] != b"\n":
                raise ValueError("binary field not followed by a newline")
            pos = start + size + 1
    return fields


def _systemd_python() -> Optional[Callable[..., Any]]:
    try:
        # By name, like notify.py: the repository's systemd/ folder is not the library.
        module = importlib.import_module("systemd.journal")
    except ImportError:
        return None
    sendv = getattr(module, "sendv", None)
    return sendv if callable(sendv) else None


def reachable(path: str = JOURNAL_SOCKET) -> bool:
    """True when something (journald) is bound to the socket at `path`."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    try:
        probe.connect(path)
        return True
    except OSError:
        return False
    finally:
        probe.close()


class JournalHandler(logging.Handler):
    """Sends each record to journald as one structured entry."""

    def __init__(
        self,
        socket_path: Optional[str] = None,
        *,
        identifier: str = IDENTIFIER,
        use_library: Optional[bool] = None,
        datagram_max: int = DATAGRAM_MAX,
    ) -> None:
        super().__init__()
        self.socket_path = socket_path or JOURNAL_SOCKET
        self.identifier = identifier
        self.datagram_max = datagram_max
        # The library only knows the real socket; a test socket always gets the plain protocol.
        if use_library is None:
            use_library = socket_path is None
        self._sendv = _systemd_python() if use_library else None
        self._sock: Optional[socket.socket] = None
        self._send_lock = threading.Lock()

    @classmethod
    def create(cls, socket_path: Optional[str] = None) -> Optional[JournalHandler]:
        """A handler when journald is reachable at `socket_path` (default: the system's), else
        None."""
        if not reachable(socket_path or JOURNAL_SOCKET):
            return None
        return cls(socket_path)

    @property
    def via_library(self) -> bool:
        return self._sendv is not None

    # ----------------------------------------------------------------- fields

    def fields(self, record: logging.LogRecord) -> List[Field]:
        message = self.format(record) if self.formatter else record.getMessage()
        if record.exc_info and not self.formatter:
            message += "\n" + logging.Formatter().formatException(record.exc_info)
        raw = message.encode("utf-8", "replace")
        if len(raw) > MESSAGE_MAX:
            raw = raw[:MESSAGE_MAX] + b"... [truncated]"
        fields: List[Field] = [
            ("MESSAGE", raw),
            ("PRIORITY", str(priority(record.levelno)).encode()),
            ("SYSLOG_IDENTIFIER", self.identifier.encode()),
            ("LOGGER", record.name.encode()),
        ]
        if record.pathname:
            fields.append(("CODE_FILE", record.pathname.encode("utf-8", "replace")))
            fields.append(("CODE_LINE", str(record.lineno).encode()))
        if record.funcName:
            fields.append(("CODE_FUNC", record.funcName.encode("utf-8", "replace")))
        if record.threadName:
            fields.append(("THREAD_NAME", record.threadName.encode("utf-8", "replace")))
        extra = getattr(record, "spotwatch", None)
        if isinstance(extra, dict):
            seen = set()
            for key, value in extra.items():
                name = field_name(str(key))
                if value is None or name in seen:
                    continue
                seen.add(name)
                fields.append((name, field_value(value)))
        return fields

    # ----------------------------------------------------------------- sending

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields = self.fields(record)
            if self._sendv is not None:
                self._sendv(*[key.encode("ascii") + b"=" + value for key, value in fields])
            else:
                self.send_native(fields)
        except Exception:
            self.handleError(record)

    def send_native(self, fields: List[Field]) -> None:
        data = encode(fields)
        with self._send_lock:
            sock = self._socket()
            if len(data) <= self.datagram_max:
                try:
                    sock.sendto(data, self.socket_path)
                    return
                except OSError as failure:
                    if failure.errno not in (errno.EMSGSIZE, errno.ENOBUFS):
                        raise
            if self._send_memfd(sock, data):
                return
            sock.sendto(self._truncated(fields), self.socket_path)

    def _socket(self) -> socket.socket:
        if self._sock is None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.settimeout(SEND_TIMEOUT)
        return self._sock

    def _send_memfd(self, sock: socket.socket, data: bytes) -> bool:
        """libsystemd's way for big entries: a sealed memfd passed with SCM_RIGHTS."""
        memfd_create = getattr(os, "memfd_create", None)
        if memfd_create is None:
            return False
        try:
            fd = memfd_create("spotwatch-journal", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        except OSError:
            return False
        try:
            os.write(fd, data)
            seals = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
            rights = (socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]).tobytes())
            sock.sendmsg([], [rights], 0, self.socket_path)
            return True
        except OSError:
            return False
        finally:
            os.close(fd)

    def _truncated(self, fields: List[Field]) -> bytes:
        others = [(k, v) for k, v in fields if k != "MESSAGE"]
        room = self.datagram_max - len(encode(others)) - 64
        message = dict(fields).get("MESSAGE", b"")
        note = b"... [truncated]"
        cut = message[: max(0, room - len(note))] + note
        return encode([("MESSAGE", cut), *others])

    def close(self) -> None:
        with self._send_lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None
        super().close()


def journal_fields(record: logging.LogRecord) -> Dict[str, bytes]:
    """The fields a record would get, as a dict (a convenience for tests and debugging)."""
    return dict(JournalHandler(socket_path="/nonexistent", use_library=False).fields(record))
