"""The shutdown nobody announced (CONTRACT §8): logind's delay lock, held while the daemon
runs, and the answer to each shutdown logind announces.

Many ends come with no notice: a stop or terminate through the EC2 API, a group with no
lifecycle hook, a notice missed while the daemon restarted, an administrator's reboot,
another cloud's preemption. Each reaches the instance as a system shutdown. `ShutdownGuard`
holds the lock from the start, on a thread that waits on the bus with no timer, and
`ShutdownAnswer` answers each `PrepareForShutdown(true)` on a thread of its own, by the
one-end rule (response/ends.py):

- a response to an end of the instance is running (terminate, stop, reboot, an Auto Scaling
  termination): wait for it to end, never longer than `shutdown.budget`, then let go;
- one ended on this boot: let go at once; nothing runs twice;
- none: a `shutdown` notice, its time the announcement + `budget`, gets the response of §4
  (response/build.py) from the one responder; the lock goes the moment it ends.

Called off (`PrepareForShutdown(false)`): the lock is taken again, and a `shutdown` response
still running starts no further step; like a canceled one, it ended nothing. A broken bus
connection is made again (with backoff), and a fresh lock is taken before the old one goes.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from typing import Callable, List, Optional

from spotwatch.config.schema import Config
from spotwatch.daemon.intake import log_notice
from spotwatch.daemon.shell import Daemon
from spotwatch.detection.notices import SHUTDOWN, SOURCE_SHUTDOWN, now_notice
from spotwatch.host.logind import NOT_HELD, LibraryMissing, LogindBus, LogindError
from spotwatch.logevents import RepeatFilter, emit
from spotwatch.response.ends import same_end
from spotwatch.response.responder import Response
from spotwatch.state.history import CANCELED
from spotwatch.state.schema import SKIPPED
from spotwatch.state.store import StateStore

log = logging.getLogger("spotwatch.shutdown")

TRACKER = "shutdown"  # the tracker of `shutdown` responses; their records are `shutdown#N`
GENERATION = "shutdown_generation"  # state entry: shutdown responses begun on this boot
WHY = "spotwatch answers a shutdown no notice announced (checkpoint hooks, ECS, load balancers)"
CALLED_OFF = f"{CANCELED}: the shutdown was called off"
RETRY_FIRST = 1.0  # seconds before connecting to logind again; doubled up to RETRY_MAX
RETRY_MAX = 60.0
STOP_WAIT = 2.0

Release = Callable[[str], None]  # let the shutdown go on, saying why


class ShutdownAnswer:
    """What the daemon does when a shutdown is announced. No D-Bus here: the guard calls it
    for logind's announcements, the rehearsal for a simulated one."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._daemon: Optional[Daemon] = None
        self._clock = clock
        self._wall = wall
        self._lock = threading.Lock()
        self._current: Optional[str] = None  # the newest `shutdown` response's record

    def bind(self, daemon: Daemon) -> None:
        """A `DaemonParts.on_start` callback: the daemon's responder, store and config."""
        self._daemon = daemon
        for key, record in (daemon.store.value("responses") or {}).items():
            if record.get("tracker") == TRACKER and not record.get("done"):
                # No poll confirms a shutdown: the one this answered went ahead or was called
                # off while the daemon was down; its unfinished steps will never run.
                why = "the daemon restarted before the shutdown response ended"
                daemon.store.end_response(key, why=why, unfinished=SKIPPED)

    def announced(self, release: Release) -> None:
        """Answer an announced shutdown; returns once `release` was called (at most
        `shutdown.budget` after the announcement)."""
        why = "an internal error"
        try:
            why = self._answer()
        except Exception:  # never foreseen: the shutdown must not wait for nothing
            log.exception("answering the shutdown failed")
        finally:
            release(why)

    def _answer(self) -> str:
        daemon = self._daemon
        if daemon is None:
            return "the daemon had not started yet"
        budget = daemon.config.shutdown.budget
        until = self._clock() + budget
        notice = daemon.intake.labelled(
            now_notice(SHUTDOWN, SOURCE_SHUTDOWN, self._wall() + budget)
        )
        running = [
            r for r in daemon.responder.running() if r.halted is None and same_end(r.notice, notice)
        ]
        if running:
            what = " and ".join(sorted({r.notice.action for r in running}))
            emit(
                log,
                logging.WARNING,
                "shutdown-waits",
                f"a shutdown was announced while the {what} response runs: holding it back "
                f"until that ends, at most {budget:g} s (shutdown.budget)",
                action=SHUTDOWN,
            )
            return self._waited(running, until, budget, f"the {what} response ended")
        earlier = daemon.responder.ended_of_same_end(TRACKER, notice)
        if earlier is not None:
            emit(
                log,
                logging.WARNING,
                "shutdown-answered",
                f"a shutdown was announced after the response {earlier} ended on this boot: "
                "nothing runs twice",
                action=SHUTDOWN,
            )
            return f"the response {earlier} ended before it"
        log_notice(notice)
        key = self._next_key(daemon.store)
        with self._lock:
            self._current = key
        response = daemon.responder.start(key, TRACKER, notice)
        return self._waited([response], until, budget, "the shutdown response ended")

    def _waited(self, responses: List[Response], until: float, budget: float, done: str) -> str:
        for response in responses:
            if not response.ended.wait(max(0.0, until - self._clock())):
                return f"shutdown.budget ({budget:g} s) is over"
        return done

    @staticmethod
    def _next_key(store: StateStore) -> str:
        stored = store.value(GENERATION)
        number = (stored if isinstance(stored, int) else 0) + 1
        store.set_value(GENERATION, number)
        return f"{TRACKER}#{number}"

    def called_off(self) -> None:
        """The shutdown was called off: its response (if any) starts no further step and,
        like a canceled one, ended nothing."""
        daemon = self._daemon
        with self._lock:
            key, self._current = self._current, None
        if daemon is None or key is None:
            return
        running = daemon.responder.running(tracker=TRACKER)
        for response in running:
            daemon.responder.halt(response, CALLED_OFF)
        if not any(r.key == key for r in running):
            daemon.store.end_response(key, why=CALLED_OFF, unfinished=SKIPPED)


class ShutdownGuard:
    """logind's shutdown delay lock, held while the daemon runs, and the announcements that
    come through the bus connection, handed to the answer."""

    def __init__(
        self,
        answer: ShutdownAnswer,
        *,
        connect: Callable[[], LogindBus] = LogindBus.connect,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._answer = answer
        self._connect = connect
        self._clock = clock
        self._lock = threading.Lock()  # guards everything below
        self._fd: Optional[int] = None  # the lock while held
        # Bumped by every lock taken and every call-off: a release names the one it may end.
        self._generation = 0
        self._answering = False  # an announcement is being answered (the lock may be gone)
        self._announced_at = 0.0
        self._bus: Optional[LogindBus] = None
        self._stopping = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._outage = RepeatFilter(log, "logind-unreachable")

    @property
    def holding(self) -> bool:
        with self._lock:
            return self._fd is not None

    def start(self, *, keep_trying: bool) -> Optional[LogindError]:
        """Connect and take the lock: None once it is held (a thread then waits for
        announcements), else why not. With `keep_trying`, the thread tries again meanwhile."""
        failure: Optional[LogindError] = None
        bus: Optional[LogindBus] = None
        try:
            bus = self._hold()
        except LogindError as error:
            if not keep_trying:
                return error
            failure = error
        self._thread = threading.Thread(target=self._run, args=(bus,), name="logind", daemon=True)
        self._thread.start()
        return failure

    def stop(self) -> None:
        """Stop listening and let the lock go (the process ending would too)."""
        self._stopping.set()
        with self._lock:
            bus = self._bus
        if bus is not None:
            bus.interrupt()
        if self._thread is not None:
            self._thread.join(STOP_WAIT)
        with self._lock:
            fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    # ----------------------------------------------------------------- the lock

    def _hold(self) -> LogindBus:
        bus = self._connect()
        try:
            bus.watch_shutdowns()
            with self._lock:
                answering = self._answering
            if not answering:  # a shutdown under way is not held back a second time
                self._take(bus)
        except LogindError:
            bus.close()
            raise
        with self._lock:
            self._bus = bus
        if self._stopping.is_set():
            bus.interrupt()
        return bus

    def _take(self, bus: LogindBus) -> None:
        fd = bus.inhibit_shutdown(WHY)
        with self._lock:
            old, self._fd = self._fd, fd
            self._generation += 1
        if old is not None:
            os.close(old)  # the fresh lock came first: no moment without one
        emit(log, logging.INFO, "shutdown-lock", "holding logind's shutdown delay lock")

    def release(self, generation: int, why: str) -> None:
        """Let the shutdown announced at `generation` go on (nothing if that has passed)."""
        with self._lock:
            if generation != self._generation or self._fd is None:
                return
            fd, self._fd = self._fd, None
            held = self._clock() - self._announced_at
        os.close(fd)
        emit(
            log,
            logging.WARNING,
            "shutdown-released",
            f"letting the shutdown go on: {why} (held back {held:.3f} s)",
            action=SHUTDOWN,
            held=round(held, 3),
        )

    # ----------------------------------------------------------------- the bus

    def _run(self, bus: Optional[LogindBus]) -> None:
        delay = RETRY_FIRST
        while not self._stopping.is_set():
            if bus is None:
                if self._stopping.wait(delay):
                    return
                try:
                    bus = self._hold()
                except LogindError as failure:
                    self._outage.failure(f"cannot reach logind ({failure}); trying again")
                    delay = min(delay * 2, RETRY_MAX)
                    continue
                self._outage.recovered("connected to logind again")
                delay = RETRY_FIRST
            try:
                self._listen(bus)
            except LogindError as failure:
                if not self._stopping.is_set():
                    self._outage.failure(f"lost logind ({failure}); connecting again")
            with self._lock:
                self._bus = None
            bus.close()
            bus = None

    def _listen(self, bus: LogindBus) -> None:
        while not self._stopping.is_set():
            if bus.next_announcement():
                self._announced()
            else:
                self._called_off(bus)

    def _announced(self) -> None:
        with self._lock:
            if self._answering:
                return
            self._answering = True
            self._announced_at = self._clock()
            generation = self._generation
        emit(log, logging.WARNING, "shutdown-announced", "logind announced a shutdown")
        threading.Thread(
            target=self._answer.announced,
            args=(functools.partial(self.release, generation),),
            name="shutdown-answer",
            daemon=True,
        ).start()

    def _called_off(self, bus: LogindBus) -> None:
        with self._lock:
            self._answering = False
            self._generation += 1  # a release still due for the announcement is void
            held = self._fd is not None
        emit(
            log,
            logging.WARNING,
            "shutdown-called-off",
            "logind: the shutdown was called off; holding the delay lock again",
            action=SHUTDOWN,
        )
        self._answer.called_off()
        if not held:
            self._take(bus)


class ShutdownParts:
    """The guard as the daemon sees it: started with it, following reloads, stopped with it."""

    def __init__(self, *, connect: Callable[[], LogindBus] = LogindBus.connect) -> None:
        self.answer = ShutdownAnswer()
        self.guard: Optional[ShutdownGuard] = None
        self._connect = connect
        self._enabled: object = None  # the `shutdown.enabled` the guard follows

    def on_start(self, daemon: Daemon) -> None:
        self.answer.bind(daemon)
        self._follow(daemon.config)

    def on_reload(self, config: Config) -> None:
        if config.shutdown.enabled != self._enabled:
            self._follow(config)

    def on_stop(self, seconds_left: float) -> None:
        """The daemon is stopping (its responses are done or abandoned): let the lock go."""
        self._let_go()

    def _let_go(self) -> None:
        if self.guard is not None:
            self.guard.stop()
            self.guard = None

    def _follow(self, config: Config) -> None:
        self._let_go()
        enabled = self._enabled = config.shutdown.enabled
        if enabled is False:
            emit(log, logging.INFO, "shutdown-off", "shutdown.enabled is false: " + NOT_HELD)
            return
        guard = ShutdownGuard(self.answer, connect=self._connect)
        failure = guard.start(keep_trying=enabled is True)
        if failure is None:
            self.guard = guard
        elif enabled is True:  # `run` checked it at start: a passing trouble; tried again
            self.guard = guard
            emit(log, logging.ERROR, "logind-unreachable", f"{failure}; trying again")
        else:
            level = logging.WARNING if isinstance(failure, LibraryMissing) else logging.INFO
            emit(log, level, "shutdown-off", f"shutdown.enabled auto: off, {failure}: {NOT_HELD}")
