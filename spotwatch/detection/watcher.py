"""The poll loop: ask every monitor on a fixed monotonic cadence, de-duplicate, report.

Cadence: ticks sit on a grid `start + k * interval`. A slow poll does not shift the grid,
and ticks missed while a poll overran are skipped rather than bunched up. Each poll's
retries end before the next tick. The watcher only detects; it hands notices to a
`WatchListener` (the daemon), which starts the response beside the loop, so polling (and
watching for a moved time or a changed action) goes on while hooks run.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, List, Optional, Protocol, Set, Tuple

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


@dataclass(frozen=True)
class PollReport:
    started: float  # monotonic
    ended: float  # monotonic
    wall_time: float  # time.time() at the start, for status and metrics
    ok: bool  # the spot monitor got a usable answer
    result: str  # "ok" | "notice" | "error": the label of spotwatch_polls_total
    errors: Tuple[str, ...]
    notice: Optional[Notice]  # the interruption notice known after this poll
    rebalance: Optional[Notice]

    @property
    def duration(self) -> float:
        return self.ended - self.started


def poll_budget(interval: float) -> float:
    """How long one poll (with its retries) may take, from its tick."""
    return max(interval - TICK_SLACK, MIN_POLL_BUDGET)


class WatchListener(Protocol):
    def on_notice(self, monitor: str, observation: Observation) -> None:
        """A NEW, MOVED or FORGOTTEN notice; called on the poll thread, so return quickly."""

    def on_poll(self, report: PollReport) -> None:
        """After every poll (successful or not); the place for watchdog pings and state."""


class Watcher:
    def __init__(
        self,
        monitors: List[Tuple[Monitor, NoticeTracker]],
        listener: WatchListener,
        interval: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if not monitors:
            raise ValueError("a watcher needs at least one monitor")
        self.monitors = monitors
        self.listener = listener
        self.interval = interval
        self._clock = clock
        self._wall = wall
        self._wake = threading.Event()
        self._stopping = False
        self._failures = RepeatFilter(log, "poll-failed")
        self._crashes: Set[str] = set()
        self.polls = 0

    def poll_once(self, deadline: Optional[float] = None) -> PollReport:
        """One poll of every monitor; notices reach the listener as soon as they are seen."""
        started, wall = self._clock(), self._wall()
        if deadline is None:
            deadline = started + poll_budget(self.interval)
        errors: List[str] = []
        known: List[Optional[Notice]] = []
        spot_ok = True
        for index, (monitor, tracker) in enumerate(self.monitors):
            reading = self._check(monitor, deadline)
            if reading.ok:
                observation = tracker.observe(reading.notice, reading.speaks_for)
                if observation.change in REPORTED_CHANGES:
                    self.listener.on_notice(monitor.name, observation)
            else:
                errors.append(reading.error or f"{monitor.name}: no answer")
                spot_ok = spot_ok and index > 0  # the first monitor decides the poll's result
            known.append(tracker.known)
        spot_notice = known[0]
        result = "error" if not spot_ok else ("notice" if spot_notice else "ok")
        if errors:
            self._failures.failure("IMDS poll failed: " + "; ".join(errors))
        else:
            self._failures.recovered("IMDS answers again")
        self.polls += 1
        report = PollReport(
            started=started,
            ended=self._clock(),
            wall_time=wall,
            ok=spot_ok,
            result=result,
            errors=tuple(errors),
            notice=spot_notice,
            rebalance=known[1] if len(known) > 1 else None,
        )
        self.listener.on_poll(report)
        return report

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
            if self._wake.wait(max(0.0, next_tick - now)):
                self._wake.clear()
                next_tick = self._clock()

    def poke(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
