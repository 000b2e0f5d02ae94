"""The poll loop: ask every monitor on a fixed monotonic cadence, de-duplicate, report.

Cadence: ticks sit on a grid `start + k * interval`. A slow poll does not shift the grid,
and ticks missed while a poll overran are skipped rather than bunched up. Each poll's
retries end before the next tick. The watcher only detects; it hands notices to a
`WatchListener` (the daemon), which starts the response beside the loop, so polling (and
watching for a moved time or a changed action) goes on while hooks run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import time
import weakref
from dataclasses import dataclass
from typing import (
    Callable,
    Dict,
    FrozenSet,
    List,
    Mapping,
    Optional,
    Protocol,
    Sequence,
    Set,
    Tuple,
)

from spotwatch.detection.monitors import Monitor, Reading
from spotwatch.detection.notices import Notice
from spotwatch.detection.tracker import Change, NoticeTracker, Observation
from spotwatch.logevents import RepeatFilter

log = logging.getLogger("spotwatch.watcher")

# Leave this much of the interval unused by retries, so the loop is on time for the next tick.
TICK_SLACK = 0.05
# ...but a poll always gets at least this long: with an interval below TICK_SLACK + the IMDS
# client's smallest attempt (~70 ms, as benchmarks and tests use) no request was ever sent.
MIN_POLL_BUDGET = 0.1
REPORTED_CHANGES = (Change.NEW, Change.MOVED, Change.FORGOTTEN)


def tracker_key(monitor: str, identity: str) -> str:
    """Trackers are named after their monitor, and the notice's identity where a monitor
    knows several notices at once (a scheduled event's EventId)."""
    return f"{monitor}/{identity}" if identity else monitor


def monitor_of(key: str) -> str:
    return key.split("/", 1)[0]


@dataclass(frozen=True)
class MonitorReport:
    """What one monitor said in one poll."""

    polled: bool  # False: not due this poll (a monitor of its own cadence)
    ok: bool = True
    error: Optional[str] = None
    degraded: Optional[str] = None


@dataclass(frozen=True)
class PollReport:
    started: float  # monotonic
    ended: float  # monotonic
    wall_time: float  # time.time() at the start, for status and metrics
    result: str  # ok | notice | degraded | error: the label of spotwatch_polls_total
    monitors: Mapping[str, MonitorReport]
    known: Mapping[str, Notice]  # tracker key -> the notice known after this poll
    seen: FrozenSet[str]  # tracker keys whose notice this poll saw there
    errors: Tuple[str, ...]
    # The monitors whose answer decides the result: their notice is "the" interruption
    # notice of a poll (AWS's Spot notice, Google's preemption).
    primary: FrozenSet[str] = frozenset({"spot"})

    @property
    def ok(self) -> bool:
        """The monitors that decide the result got a usable answer (degraded included)."""
        return self.result != "error"

    @property
    def notice(self) -> Optional[Notice]:
        """The interruption notice known after this poll (the primary monitors')."""
        return next((n for key, n in self.known.items() if monitor_of(key) in self.primary), None)

    @property
    def duration(self) -> float:
        return self.ended - self.started


class Waker:
    """Wakes a sleeping poll loop: a non-blocking self-pipe rather than a threading.Event.

    A signal handler may write to it: `os.write` takes no lock, whereas `Event.set()` from a
    handler deadlocks when the signal lands while the main thread holds that Event's lock.
    Its write end also serves as `signal.set_wakeup_fd`, so a signal delivered to any thread
    ends the loop's sleep at once instead of when the sleep would have ended anyway.
    """

    def __init__(self) -> None:
        self._read, self.write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._poller = select.poll()
        self._poller.register(self._read, select.POLLIN)
        self._close = weakref.finalize(self, _close_fds, self._read, self.write_fd)

    def wake(self) -> None:
        # A full pipe means a wake is pending anyway; a closed one, that nobody sleeps.
        with contextlib.suppress(OSError):
            os.write(self.write_fd, b"\0")

    def sleep(self, timeout: float) -> bool:
        """Sleep up to `timeout` seconds; True when woken (pending wakes are consumed)."""
        if not self._poller.poll(max(0, int(timeout * 1000 + 0.999))):
            return False
        try:
            while os.read(self._read, 4096):
                pass
        except BlockingIOError:
            pass
        return True

    def close(self) -> None:
        self._close()


def _close_fds(*fds: int) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def poll_budget(interval: float) -> float:
    """How long one poll (with its retries) may take, from its tick."""
    return max(interval - TICK_SLACK, MIN_POLL_BUDGET)


class WatchListener(Protocol):
    def on_notice(self, tracker: str, observation: Observation) -> None:
        """A NEW, MOVED or FORGOTTEN notice; called on the poll thread, so return quickly."""

    def on_poll(self, report: PollReport) -> None:
        """After every poll (successful or not); the place for watchdog pings and state."""


class Watcher:
    def __init__(
        self,
        monitors: Sequence[Monitor],
        listener: WatchListener,
        interval: float,
        *,
        trackers: Optional[Mapping[str, NoticeTracker]] = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if not monitors:
            raise ValueError("a watcher needs at least one monitor")
        self.listener = listener
        self.interval = interval
        self._clock = clock
        self._wall = wall
        self.trackers: Dict[str, NoticeTracker] = {}
        self.monitors: List[Monitor] = []
        self._due: Dict[str, float] = {}
        self.waker = Waker()
        self.set_monitors(monitors, trackers or {})
        self._stopping = False
        self._failures = RepeatFilter(log, "poll-failed")
        self._degraded = RepeatFilter(log, "poll-degraded")
        self._crashes: Set[str] = set()
        self.polls = 0

    def set_monitors(
        self, monitors: Sequence[Monitor], trackers: Mapping[str, NoticeTracker]
    ) -> None:
        """Watch these monitors (at start, and on a reload), each with the trackers of its
        notices; a monitor no longer watched takes its trackers with it."""
        names = {m.name for m in monitors}
        if len(names) != len(monitors):
            raise ValueError("monitor names must be unique")
        kept = {k: t for k, t in {**self.trackers, **trackers}.items() if monitor_of(k) in names}
        for monitor in monitors:
            kept.setdefault(monitor.name, NoticeTracker())
            for key, tracker in kept.items():
                if monitor_of(key) == monitor.name and (key == monitor.name or tracker.known):
                    monitor.adopt(tracker.known)
        retired = [m for m in self.monitors if all(m is not n for n in monitors)]
        fresh = [m for m in monitors if all(m is not o for o in self.monitors)]
        self.monitors, self.trackers = list(monitors), kept
        self._due = {m.name: self._due.get(m.name, 0.0) for m in monitors}
        for monitor in retired:
            monitor.close()
        for monitor in fresh:
            monitor.attach(self.waker.wake)

    def poll_once(self, deadline: Optional[float] = None) -> PollReport:
        """One poll of every monitor that is due; notices reach the listener as soon as
        they are seen."""
        started, wall = self._clock(), self._wall()
        if deadline is None:
            deadline = started + poll_budget(self.interval)
        errors: List[str] = []
        reports: Dict[str, MonitorReport] = {}
        seen: Set[str] = set()
        for monitor in self.monitors:
            if started < self._due.get(monitor.name, 0.0):
                reports[monitor.name] = MonitorReport(polled=False)
                continue
            if monitor.cadence is not None:
                self._due[monitor.name] = started + monitor.cadence
            reading = self._check(monitor, deadline)
            if reading.ok:
                seen |= self._observe(monitor.name, reading)
            else:
                errors.append(reading.error or f"{monitor.name}: no answer")
            reports[monitor.name] = MonitorReport(
                polled=True, ok=reading.ok, error=reading.error, degraded=reading.degraded
            )
        result = self._result(reports)
        self._log(errors, reports)
        self.polls += 1
        report = PollReport(
            started=started,
            ended=self._clock(),
            wall_time=wall,
            result=result,
            monitors=reports,
            known={k: t.known for k, t in self.trackers.items() if t.known is not None},
            seen=frozenset(seen),
            errors=tuple(errors),
            primary=frozenset(m.name for m in self._deciding()),
        )
        self.listener.on_poll(report)
        return report

    def _observe(self, name: str, reading: Reading) -> Set[str]:
        """Feed one usable reading to the monitor's trackers: one per notice identity."""
        by_key = {tracker_key(name, n.identity): n for n in reading.notices}
        keys = set(by_key) | {k for k in self.trackers if monitor_of(k) == name}
        for key in sorted(keys):
            tracker = self.trackers.setdefault(key, NoticeTracker())
            observation = tracker.observe(by_key.get(key), reading.speaks_for)
            if observation.change in REPORTED_CHANGES:
                self.listener.on_notice(key, observation)
            if key != name and tracker.known is None:
                del self.trackers[key]  # an identity's tracker lives as long as its notice
        return set(by_key)

    def _deciding(self) -> List[Monitor]:
        return [m for m in self.monitors if m.decides_result] or self.monitors[:1]

    def _result(self, reports: Mapping[str, MonitorReport]) -> str:
        chosen = self._deciding()
        deciding = [reports[m.name] for m in chosen if reports[m.name].polled]
        if any(not r.ok for r in deciding):
            return "error"
        names = {m.name for m in chosen}
        if any(t.known is not None for k, t in self.trackers.items() if monitor_of(k) in names):
            return "notice"
        if any(r.degraded for r in deciding):
            return "degraded"
        return "ok"

    def _log(self, errors: List[str], reports: Mapping[str, MonitorReport]) -> None:
        if errors:
            # The same outage is one log line: a repeat is the same first cause per monitor.
            # What follows it (the termination-time fallback's answer) varies with how much
            # of the poll's budget the retries left: refused one poll, "no time left" the next.
            # Monitors of their own cadence fail only on the polls they are due: left out of
            # the key, or one outage would read as several.
            own = tuple(f"{m.name}:" for m in self.monitors if m.cadence is not None)
            steady = [e for e in errors if not e.startswith(own)] or errors
            key = " | ".join(error.split(";", 1)[0] for error in steady)
            self._failures.failure("IMDS poll failed: " + "; ".join(errors), key=key)
        else:
            self._failures.recovered("IMDS answers again")
        degraded = [f"{name}: {r.degraded}" for name, r in reports.items() if r.degraded]
        if degraded:
            key = " | ".join(d.split(";", 1)[0] for d in degraded)
            self._degraded.failure("IMDS poll degraded: " + "; ".join(degraded), key=key)
        elif all(r.ok for r in reports.values() if r.polled):
            self._degraded.recovered("IMDS answers in full again")

    def _check(self, monitor: Monitor, deadline: float) -> Reading:
        """`monitor.check`, with an unexpected exception (a bug) turned into a failed reading:
        a detector that stops polling over one bad answer protects nothing."""
        try:
            return monitor.check(deadline)
        except Exception as error:
            text = f"{monitor.name}: unexpected {type(error).__name__}: {error}"[:300]
            if text not in self._crashes:  # the traceback once per distinct failure
                if len(self._crashes) >= 64:
                    self._crashes.clear()
                self._crashes.add(text)
                log.error(
                    "%s",
                    text,
                    exc_info=True,
                    extra={"spotwatch": {"event": "monitor-crashed", "monitor": monitor.name}},
                )
            return Reading(ok=False, error=text)

    def run(self) -> None:
        """Poll until `stop()`; `poke()` asks for a poll now (and re-anchors the grid)."""
        next_tick = self._clock()
        while not self._stopping:
            self.poll_once(deadline=next_tick + poll_budget(self.interval))
            now = self._clock()
            next_tick += self.interval
            if next_tick <= now:  # overran: skip the missed ticks, stay on the grid
                next_tick += ((now - next_tick) // self.interval + 1) * self.interval
            if self.waker.sleep(next_tick - now) and not self._stopping:
                next_tick = self._clock()

    def poke(self) -> None:
        """Poll now. Safe from any thread and from a signal handler."""
        self.waker.wake()

    def stop(self) -> None:
        """End `run()` after the poll under way. Safe from any thread and a signal handler."""
        self._stopping = True
        self.waker.wake()

    def close(self) -> None:
        for monitor in self.monitors:
            monitor.close()
        self.waker.close()
