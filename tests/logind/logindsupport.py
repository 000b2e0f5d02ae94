"""A real dbus-daemon on a private socket, and a small org.freedesktop.login1 on it.

`PrivateBus` runs the Debian `dbus-daemon` with a config of its own (anyone may own any name
and talk to anyone: it is nobody's system bus), on a socket in the test's folder, stopped by
its PID. `LogindStandIn` owns `org.freedesktop.login1` on it, from a thread of this test
process, and answers what spotwatch asks of logind as logind does: `Inhibit` hands out the
write end of a pipe and keeps the read end, so it sees the lock released the moment the
other end is closed (by spotwatch, or by its process ending); it emits `PrepareForShutdown`,
and answers `InhibitDelayMaxUSec` and `ListInhibitors`. Every lock taken and released is
recorded with the monotonic time it happened, for the tests' figures.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from jeepney import DBusAddress, HeaderFields, MessageType, new_error, new_method_return, new_signal
from jeepney.bus_messages import message_bus
from jeepney.io.threading import DBusRouter, Proxy, ReceiveStopped, open_dbus_connection

LOGIN1 = "org.freedesktop.login1"
PATH = "/org/freedesktop/login1"
MANAGER = "org.freedesktop.login1.Manager"
PROPERTIES = "org.freedesktop.DBus.Properties"

BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
  </policy>
</busconfig>
"""


def why_not() -> str:
    """Why these tests cannot run here, or ""."""
    if shutil.which("dbus-daemon") is None:
        return "dbus-daemon is not installed (scripts/test installs the Debian package dbus)"
    return ""


class PrivateBus:
    """`dbus-daemon` on `folder/bus`, with its own config; `address` for
    DBUS_SYSTEM_BUS_ADDRESS."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.socket = folder / "bus"
        self.address = f"unix:path={self.socket}"
        config = folder / "bus.conf"
        config.write_text(BUS_CONFIG.format(socket=self.socket))
        self._log = open(folder / "dbus-daemon.log", "ab")  # noqa: SIM115 - closed in stop()
        # It prints its address once it listens: the socket file alone may come before that.
        self.process = subprocess.Popen(
            ["dbus-daemon", f"--config-file={config}", "--nofork", "--nopidfile",
             "--print-address=1"],
            stdout=subprocess.PIPE,
            stderr=self._log,
        )  # fmt: skip
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], 10)
        said = self.process.stdout.readline() if ready else b""
        self.process.stdout.close()
        if not said.startswith(b"unix:"):
            self.stop()
            raise RuntimeError(f"dbus-daemon did not start: {folder / 'dbus-daemon.log'}")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()
        self.socket.unlink(missing_ok=True)


@dataclass
class Lock:
    """One lock handed out by `Inhibit`."""

    what: str
    who: str
    why: str
    mode: str
    pid: int
    taken: float  # monotonic
    released: Optional[float] = None  # monotonic
    released_wall: Optional[float] = None  # to compare with what hooks write
    read_end: int = -1


@dataclass
class Calls:
    inhibit: int = 0
    delay_max: int = 0
    list_inhibitors: int = 0
    seen: List[str] = field(default_factory=list)


class LogindStandIn:
    """org.freedesktop.login1 on `address`, answering from a thread of this process."""

    def __init__(self, address: str, *, delay_max: float = 90.0) -> None:
        self.delay_max = delay_max
        self.locks: List[Lock] = []
        self.calls = Calls()
        self._changed = threading.Condition()
        self._conn = open_dbus_connection(bus=address, enable_fds=True)
        with DBusRouter(self._conn) as router:
            reply = Proxy(message_bus, router, timeout=5).RequestName(LOGIN1, 4)  # do not queue
            assert reply == (1,), f"could not own {LOGIN1}: {reply}"
        self._asker = DBusRouter(open_dbus_connection(bus=address))
        self._send_lock = threading.Lock()
        self._stopping = False
        self._thread = threading.Thread(target=self._serve, name="logind-stand-in", daemon=True)
        self._thread.start()
        self._watcher = threading.Thread(target=self._watch, name="lock-watch", daemon=True)
        self._watcher.start()

    # ----------------------------------------------------------------- what tests ask

    def held(self) -> List[Lock]:
        with self._changed:
            return [lock for lock in self.locks if lock.released is None]

    def wait_for(self, predicate: Any, timeout: float = 10.0) -> Any:
        """Wait until `predicate(self)` is truthy; its value (AssertionError on timeout)."""
        end = time.monotonic() + timeout
        with self._changed:
            while True:
                value = predicate(self)
                if value:
                    return value
                left = end - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"logind stand-in: condition not met in {timeout} s")
                self._changed.wait(min(left, 0.05))

    def prepare_for_shutdown(self, active: bool) -> float:
        """Emit PrepareForShutdown(active), as logind does before a shutdown (True) and when
        one is called off (False); the wall time it was sent (hooks write wall times)."""
        signal_message = new_signal(
            DBusAddress(PATH, interface=MANAGER), "PrepareForShutdown", "b", (active,)
        )
        sent = time.time()
        self._send(signal_message)
        return sent

    def stop(self) -> None:
        """Leave the bus; every lock still held is let go (logind going away). Idempotent."""
        if self._stopping:
            return
        self._stopping = True
        self._conn.interrupt()
        self._thread.join(5)
        self._conn.close()
        self._asker.close()
        self._asker.conn.close()
        with self._changed:
            for lock in self.locks:
                if lock.read_end >= 0:
                    os.close(lock.read_end)
                    lock.read_end = -1
            self._changed.notify_all()
        self._watcher.join(5)

    # ----------------------------------------------------------------- serving

    def _send(self, message: Any) -> None:
        with self._send_lock:
            self._conn.send(message)

    def _serve(self) -> None:
        while not self._stopping:
            try:
                message = self._conn.receive()
            except (ReceiveStopped, OSError, ConnectionError):
                return
            if message.header.message_type != MessageType.method_call:
                continue
            fields = message.header.fields
            member = fields.get(HeaderFields.member)
            with self._changed:
                self.calls.seen.append(str(member))
            reply = self._answer(message, fields.get(HeaderFields.interface), member)
            if reply is not None:
                self._send(reply)

    def _answer(self, message: Any, interface: Optional[str], member: Optional[str]) -> Any:
        """The reply to send (None: sent already)."""
        if interface == MANAGER and member == "Inhibit":
            return self._inhibit(message)
        if interface == MANAGER and member == "ListInhibitors":
            with self._changed:
                self.calls.list_inhibitors += 1
                held = [
                    (lock.what, lock.who, lock.why, lock.mode, 0, lock.pid)
                    for lock in self.locks
                    if lock.released is None
                ]
            return new_method_return(message, "a(ssssuu)", (held,))
        if interface == PROPERTIES and member == "Get" and message.body[1] == "InhibitDelayMaxUSec":
            with self._changed:
                self.calls.delay_max += 1
            return new_method_return(message, "v", (("t", int(self.delay_max * 1e6)),))
        return new_error(message, "org.freedesktop.DBus.Error.UnknownMethod")

    def _inhibit(self, message: Any) -> Any:
        what, who, why, mode = message.body
        read_end, write_end = os.pipe()
        pid = self._sender_pid(message.header.fields.get(HeaderFields.sender))
        with self._changed:
            self.calls.inhibit += 1
            self.locks.append(Lock(what, who, why, mode, pid, time.monotonic(), read_end=read_end))
            self._changed.notify_all()
        reply = new_method_return(message, "h", (write_end,))
        try:
            self._send(reply)
        finally:
            os.close(write_end)  # the only writer left is the one spotwatch received
        return None

    def _sender_pid(self, sender: Optional[str]) -> int:
        """The caller's PID, asked of the bus on a connection of its own (this thread is the
        one that would receive the answer on the serving connection)."""
        if sender is None:
            return 0
        try:
            (pid,) = Proxy(message_bus, self._asker, timeout=5).GetConnectionUnixProcessID(sender)
        except Exception:
            return 0
        return int(pid)

    def _watch(self) -> None:
        """See each lock released: its pipe's read end hangs up when the last writer closes."""
        while not self._stopping:
            with self._changed:
                ends: Dict[int, Lock] = {
                    lock.read_end: lock for lock in self.locks if lock.read_end >= 0
                }
            if not ends:
                with self._changed:
                    self._changed.wait(0.05)
                continue
            poller = select.poll()
            for fd in ends:
                poller.register(fd, select.POLLHUP | select.POLLIN)
            try:
                ready: List[Tuple[int, int]] = poller.poll(20)
            except OSError:
                continue
            now, wall = time.monotonic(), time.time()
            with self._changed:
                for fd, _ in ready:
                    lock = ends[fd]
                    if lock.read_end == fd:
                        lock.released, lock.released_wall = now, wall
                        os.close(fd)
                        lock.read_end = -1
                self._changed.notify_all()


# --------------------------------------------------------------------- hooks that keep time


@dataclass
class HookRun:
    name: str
    action: str
    source: str
    notice_time: str
    started: float  # wall, as the hook read it
    ended: Optional[float] = None


def timed_hook(
    folder: Path, name: str, out: Path, *, actions: List[str], sleep: float = 0.0, **extra: Any
) -> Dict[str, Any]:
    """A hook (a real script) that appends its start and end, with the wall time, to `out`."""
    script = folder / f"{name}.sh"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "start {name} $SPOTWATCH_ACTION $SPOTWATCH_SOURCE $SPOTWATCH_NOTICE_TIME '
        f'$(date +%s.%N)" >> "{out}"\n'
        f"sleep {sleep}\n"
        f'echo "end {name} $SPOTWATCH_ACTION $(date +%s.%N)" >> "{out}"\n'
    )
    script.chmod(0o755)
    return {"name": name, "command": [str(script)], "actions": actions, **extra}


def hook_runs(out: Path) -> List[HookRun]:
    """Every run the hooks wrote to `out`, in the order they started."""
    runs: List[HookRun] = []
    for line in out.read_text().splitlines() if out.exists() else []:
        words = line.split()
        if words[0] == "start":
            runs.append(HookRun(words[1], words[2], words[3], words[4], float(words[5])))
        elif words[0] == "end":
            run = next(r for r in reversed(runs) if r.name == words[1] and r.ended is None)
            run.ended = float(words[3])
    return runs
