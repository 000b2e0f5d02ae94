"""The host around the daemon in a played sequence, beside IMDS and AWS (model_world.py):

- logind (§8): a real dbus-daemon on a private socket with the tests' login1 stand-in on it
  (tests/logind/logindsupport.py); the daemon finds it through DBUS_SYSTEM_BUS_ADDRESS,
  which spotwatch honours anyway. The stand-in records every delay lock taken and released;
  the driver emits PrepareForShutdown and notes each announcement in the trace.
- `PresetReceiver` (§9): the URL the `http` preset hook posts its event JSON to. It notes
  when each request came and when it answered (200, after `answer_after` seconds), so a
  preset run is recorded as a hook run is, with the event's fields for its environment.
"""

from __future__ import annotations

import calendar
import contextlib
import json
import select
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from model_trace import HookRun, LockSpan
from testkit import QuietHandler, serve_in_thread

if TYPE_CHECKING:
    from dockerworld import DockerWorld

# What the event JSON says (§6) -> what a hook would be told in its environment (§4).
EVENT_TO_ENV = {
    "action": "SPOTWATCH_ACTION",
    "source": "SPOTWATCH_SOURCE",
    "instance_id": "SPOTWATCH_INSTANCE_ID",
    "notice_time": "SPOTWATCH_NOTICE_TIME",
    "event_id": "SPOTWATCH_EVENT_ID",
    "event_code": "SPOTWATCH_EVENT_CODE",
    "canceled_action": "SPOTWATCH_CANCELED_ACTION",
}


def _epoch(text: str) -> Optional[float]:
    """`2026-12-07T02:15:00Z` or, as events write it, `2026-12-07T02:15:00.12Z`."""
    whole, _, fraction = text.rstrip("Z").partition(".")
    try:
        seconds = calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S"))
        return seconds + (float("0." + fraction) if fraction else 0.0)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class Posted:
    hook: str
    came: float
    ended: float  # answered, or when the preset hung up (it gave up first)
    event: Dict[str, Any]


def hung_up(connection: socket.socket, until: float) -> bool:
    """Wait until `until` for the client to close the connection (True: it did; the
    moment is now). A preset that gives up at its T closes it at once."""
    while True:
        left = until - time.time()
        if left <= 0:
            return False
        readable, _, _ = select.select([connection], [], [], left)
        if readable:
            try:
                if connection.recv(1, socket.MSG_PEEK) == b"":
                    return True
            except OSError:
                return True
            time.sleep(min(0.01, max(0.0, until - time.time())))  # data, not a hang-up


class PresetReceiver:
    """An HTTP server of the world's own, answering 200 after `answer_after` seconds."""

    def __init__(self) -> None:
        self.answer_after = 0.3
        self.posted: List[Posted] = []
        self.since = 0.0  # requests that came before this (an earlier sequence's) are not kept
        self._lock = threading.Lock()
        receiver = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                came = time.time()
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if not hung_up(self.connection, came + receiver.answer_after):
                    with contextlib.suppress(OSError):
                        self.reply(200, b"{}", "application/json")
                try:
                    event = json.loads(body)
                except ValueError:
                    event = {}
                with receiver._lock:
                    if came >= receiver.since:
                        posted = Posted(self.path.strip("/"), came, time.time(), dict(event))
                        receiver.posted.append(posted)

        self._server, self.url = serve_in_thread(Handler)

    def reset(self, answer_after: float) -> None:
        with self._lock:
            self.posted, self.answer_after, self.since = [], answer_after, time.time()

    def runs(self) -> List[HookRun]:
        """Each request as a hook run: it ends when answered, or when the preset hung up
        (its time ran out first)."""
        with self._lock:
            posted = list(self.posted)
        runs = []
        for post in posted:
            env = {
                name: str(post.event[key])
                for key, name in EVENT_TO_ENV.items()
                if key in post.event
            }
            deadline = _epoch(str(post.event.get("deadline", "")))
            if deadline is not None:
                env["SPOTWATCH_DEADLINE"] = str(int(deadline))
                env["SPOTWATCH_SECONDS_LEFT"] = str(max(0, int(deadline - post.came)))
            env["SPOTWATCH_DRY_RUN"] = "0"  # in dry run a preset only logs what it would do
            runs.append(HookRun(post.hook, post.came, post.ended, env))
        return runs

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class Logind:
    """The private bus and logind stand-in, shared by a module's sequences; `mark` starts a
    sequence's records."""

    def __init__(self, folder: Path) -> None:
        from logindsupport import LogindStandIn, PrivateBus

        self.bus = PrivateBus(folder)
        try:
            self.stand_in = LogindStandIn(self.bus.address)
        except Exception:
            self.bus.stop()
            raise
        self.address = self.bus.address
        self._first = 0
        # The stand-in stamps locks with the monotonic clock; the trace speaks wall time.
        self._offset = time.time() - time.monotonic()

    def mark(self) -> None:
        self._first = len(self.stand_in.locks)

    def announce(self, active: bool) -> float:
        return self.stand_in.prepare_for_shutdown(active)

    def holding(self) -> bool:
        return any(lock.who == "spotwatch" for lock in self.stand_in.held())

    def wait_released(self, limit: float) -> None:
        """Until no spotwatch lock is held (the shutdown may go on), at most `limit` s."""
        end = time.time() + limit
        while time.time() < end and self.holding():
            time.sleep(0.05)

    def spans(self) -> List[LockSpan]:
        locks = self.stand_in.locks[self._first :]
        return [
            LockSpan(
                lock.taken + self._offset,
                None if lock.released is None else lock.released + self._offset,
                lock.who,
            )
            for lock in locks
        ]

    def close(self) -> None:
        self.stand_in.stop()
        self.bus.stop()


def start_logind(folder: Path) -> Tuple[Optional[Logind], str]:
    """logind for the sequences, or why there is none (then §8 is not played)."""
    try:
        from logindsupport import why_not
    except ImportError as missing:  # jeepney (the `logind` extra) is not installed
        return None, f"no D-Bus library: {missing}"
    reason = why_not()
    if reason:
        return None, reason
    try:
        return Logind(folder), ""
    except Exception as failure:
        return None, f"the private bus did not start: {failure!r}"


@dataclass
class Host:
    """What the module's sequences share besides AWS: logind (None where it cannot run) and
    the preset's receiver."""

    logind: Optional[Logind]
    receiver: PresetReceiver
    why_no_logind: str = ""
    docker: Optional[DockerWorld] = None  # the session's dockerd (None: runtime not drawn)

    @classmethod
    def start(cls, folder: Path, docker: Optional[DockerWorld] = None) -> Host:
        logind, why = start_logind(folder)
        return cls(logind, PresetReceiver(), why, docker)

    def close(self) -> None:
        self.receiver.close()
        if self.logind is not None:
            self.logind.close()
