"""logind on the system bus: the shutdown delay lock, its announcements and its limits.

Spoken through jeepney, a maintained pure-Python D-Bus library, and optional at run time the
way systemd-python is: without it `shutdown.enabled: auto` is off (CONTRACT §8). The bus is
the one DBUS_SYSTEM_BUS_ADDRESS names, else the standard system bus (jeepney's own rule).

- `Inhibit("shutdown", "spotwatch", why, "delay")` answers with a file descriptor: the lock
  lasts until it is closed (by spotwatch, or by the process ending however it ends).
- `PrepareForShutdown(true)`: a poweroff, reboot, halt or kexec is about to begin; logind
  waits for every delay lock to close, at most `InhibitDelayMaxUSec`. `false`: called off.
- `InhibitDelayMaxUSec` and `ListInhibitors`, for `spotwatch check`.

A `LogindBus` is used by one thread at a time; only `interrupt` may come from another.
Every failure is a `LogindError` whose message says what went wrong, for one log line.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Deque, List, Tuple

LOGIN1 = "org.freedesktop.login1"
LOGIN1_PATH = "/org/freedesktop/login1"
MANAGER = "org.freedesktop.login1.Manager"
WHO = "spotwatch"
DEFAULT_SYSTEM_BUS = "unix:path=/var/run/dbus/system_bus_socket"
INSTALL_HINT = "pip install 'spotwatch[logind]', or the distribution's python3-jeepney"
AUTH_TIMEOUT = 2.0  # connecting and authenticating to the bus
CALL_TIMEOUT = 5.0  # a method call logind has not answered in this long: it does not answer
NOT_HELD = "a shutdown no notice announced is not held back"
UNKNOWN_NAME = (
    "org.freedesktop.DBus.Error.ServiceUnknown",
    "org.freedesktop.DBus.Error.NameHasNoOwner",
)


class LogindError(Exception):
    """logind cannot be reached or did not do what was asked (the message says which)."""


class LibraryMissing(LogindError):
    """jeepney is not installed: nothing here can speak D-Bus."""


@dataclass(frozen=True)
class Inhibitor:
    """One entry of ListInhibitors."""

    what: str  # colon-separated: shutdown, sleep, idle, handle-power-key, ...
    who: str
    why: str
    mode: str  # block | delay
    uid: int
    pid: int


def system_bus_address() -> str:
    return os.environ.get("DBUS_SYSTEM_BUS_ADDRESS") or DEFAULT_SYSTEM_BUS


def _said(failure: BaseException) -> str:
    return str(failure) or type(failure).__name__


class LogindBus:
    """One connection to the system bus, to speak with logind."""

    def __init__(self, connection: Any) -> None:
        self._conn = connection
        self._announced: Deque[bool] = deque()  # PrepareForShutdown arguments not yet taken

    @classmethod
    def connect(cls) -> LogindBus:
        """Connect with file-descriptor passing (the lock is one); LogindError when the
        library is missing or no bus answers at the address."""
        try:
            from jeepney.io.threading import open_dbus_connection
        except ImportError:
            raise LibraryMissing(f"the jeepney library is not installed ({INSTALL_HINT})") from None
        address = system_bus_address()
        try:
            connection = open_dbus_connection(
                bus="SYSTEM", enable_fds=True, auth_timeout=AUTH_TIMEOUT
            )
        except Exception as failure:  # a bad address, no socket, a refused or silent bus
            raise LogindError(f"no system bus at {address}: {_said(failure)}") from None
        return cls(connection)

    # ----------------------------------------------------------------- calls

    def _manager(self, method: str, signature: str = "", body: Tuple[Any, ...] = ()) -> Any:
        from jeepney import DBusAddress, new_method_call

        return new_method_call(
            DBusAddress(LOGIN1_PATH, bus_name=LOGIN1, interface=MANAGER), method, signature, body
        )

    def _call(self, message: Any, what: str, timeout: float = CALL_TIMEOUT) -> Tuple[Any, ...]:
        """Send a method call and wait for its answer; signals meanwhile are kept."""
        from jeepney import HeaderFields
        from jeepney.wrappers import DBusErrorResponse, unwrap_msg

        serial = next(self._conn.outgoing_serial)
        end = time.monotonic() + timeout
        try:
            self._conn.send(message, serial=serial)
            while True:
                reply = self._conn.receive(timeout=max(0.0, end - time.monotonic()))
                if reply.header.fields.get(HeaderFields.reply_serial) == serial:
                    return tuple(unwrap_msg(reply))
                self._keep(reply)
        except DBusErrorResponse as refusal:
            if refusal.name in UNKNOWN_NAME:
                raise LogindError(f"logind is not on the system bus ({refusal.name})") from None
            raise LogindError(f"{what}: logind refused it ({_said(refusal)[:160]})") from None
        except TimeoutError:
            raise LogindError(f"{what}: logind did not answer in {timeout:g} s") from None
        except Exception as failure:  # the connection broke, or was interrupted
            raise LogindError(f"{what}: the bus connection failed ({_said(failure)})") from None

    def inhibit_shutdown(self, why: str) -> int:
        """Take a shutdown delay lock; its file descriptor (close it to release the lock)."""
        body = self._call(
            self._manager("Inhibit", "ssss", ("shutdown", WHO, why, "delay")), "Inhibit"
        )
        handle = body[0] if body else None
        if handle is None or not hasattr(handle, "to_raw_fd"):
            raise LogindError("Inhibit: logind answered without a file descriptor")
        fd: int = handle.to_raw_fd()
        return fd

    def delay_max(self) -> float:
        """logind's InhibitDelayMaxUSec, in seconds: the longest it waits for delay locks."""
        from jeepney import DBusAddress, Properties

        manager = DBusAddress(LOGIN1_PATH, bus_name=LOGIN1, interface=MANAGER)
        body = self._call(Properties(manager).get("InhibitDelayMaxUSec"), "InhibitDelayMaxUSec")
        signature, value = body[0]
        if signature != "t" or not isinstance(value, int):
            raise LogindError(f"InhibitDelayMaxUSec: unexpected answer of type {signature!r}")
        return value / 1e6

    def inhibitors(self) -> List[Inhibitor]:
        body = self._call(self._manager("ListInhibitors"), "ListInhibitors")
        return [Inhibitor(*entry) for entry in body[0]]

    # ----------------------------------------------------------------- announcements

    def watch_shutdowns(self) -> None:
        """Ask the bus for logind's PrepareForShutdown signals (only logind can send them:
        the bus matches the sender by the name logind owns)."""
        from jeepney import MatchRule
        from jeepney.bus_messages import message_bus

        rule = MatchRule(
            type="signal",
            sender=LOGIN1,
            interface=MANAGER,
            member="PrepareForShutdown",
            path=LOGIN1_PATH,
        )
        self._call(message_bus.AddMatch(rule), "AddMatch")

    def _keep(self, message: Any) -> None:
        from jeepney import HeaderFields, MessageType

        fields = message.header.fields
        if (
            message.header.message_type == MessageType.signal
            and fields.get(HeaderFields.interface) == MANAGER
            and fields.get(HeaderFields.member) == "PrepareForShutdown"
            and message.body
            and isinstance(message.body[0], bool)
        ):
            self._announced.append(message.body[0])

    def next_announcement(self) -> bool:
        """Wait (with no timer: idle costs nothing) until logind announces a shutdown (True)
        or calls it off (False); LogindError when the connection breaks or is interrupted."""
        while not self._announced:
            try:
                message = self._conn.receive()
            except Exception as failure:
                raise LogindError(f"the bus connection ended ({_said(failure)})") from None
            self._keep(message)
        return self._announced.popleft()

    def interrupt(self) -> None:
        """From another thread: make `next_announcement` give up now."""
        self._conn.interrupt()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._conn.close()
