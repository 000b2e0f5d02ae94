"""The poll loop: cadence on a monotonic grid, skipped ticks, stop/poke, outages, reporting."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest

from spotwatch.clouds.aws.imds import ImdsClient
from spotwatch.clouds.aws.monitors import RebalanceMonitor, SpotMonitor
from spotwatch.detection.monitors import Monitor, Reading
from spotwatch.detection.tracker import Change, Observation
from spotwatch.detection.watcher import PollReport, Watcher
from spotwatch.logevents import RepeatFilter
from spotwatch.simulator.imds import ImdsSimulator

MakeClient = Callable[..., ImdsClient]
GRID_TOLERANCE = 0.05


class Listener:
    """A WatchListener that records what it is told; `slow_once` makes one on_poll slow."""

    def __init__(self) -> None:
        self.reports: List[PollReport] = []
        self.notices: List[Tuple[str, Observation]] = []
        self.slow_once: float = 0.0
        self.polled = threading.Event()

    def on_notice(self, monitor: str, observation: Observation) -> None:
        self.notices.append((monitor, observation))

    def on_poll(self, report: PollReport) -> None:
        self.reports.append(report)
        self.polled.set()
        if self.slow_once:
            pause, self.slow_once = self.slow_once, 0.0
            time.sleep(pause)

    @property
    def starts(self) -> List[float]:
        return [r.started for r in self.reports]


def spot_watcher(
    client: ImdsClient, listener: Listener, interval: float, rebalance: bool = False
) -> Watcher:
    monitors: List[Monitor] = [SpotMonitor(client)]
    if rebalance:
        monitors.append(RebalanceMonitor(client))
    return Watcher(monitors, listener, interval)


class Running:
    """A watcher's run() in a thread, with the exception it ended with, if any."""

    def __init__(self, watcher: Watcher) -> None:
        self.watcher = watcher
        self.error: Optional[BaseException] = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.watcher.run()
        except BaseException as error:  # the test reports it
            self.error = error

    def stop(self, within: float = 1.0) -> float:
        started = time.monotonic()
        self.watcher.stop()
        self.thread.join(within)
        assert not self.thread.is_alive(), "watcher did not stop"
        assert self.error is None, f"exception escaped the watcher: {self.error!r}"
        return time.monotonic() - started


@pytest.fixture
def running() -> Iterator[Callable[[Watcher], Running]]:
    started: List[Running] = []

    def start(watcher: Watcher) -> Running:
        run = Running(watcher)
        started.append(run)
        return run

    yield start
    for run in started:
        run.watcher.stop()
        run.thread.join(2)


def fields(record: logging.LogRecord) -> Dict[str, Any]:
    """The structured fields `emit` attached to a record."""
    value = getattr(record, "spotwatch", {})
    assert isinstance(value, dict)
    return value


def grid_offsets(starts: List[float], origin: float, interval: float) -> List[Tuple[int, float]]:
    """(tick number, distance from that tick) for each poll start."""
    result = []
    for start in starts:
        k = round((start - origin) / interval)
        result.append((k, start - (origin + k * interval)))
    return result


def test_polls_sit_on_the_grid(
    sim: ImdsSimulator,
    make_client: MakeClient,
    running: Callable[[Watcher], Running],
) -> None:
    """Interval 0.2 s for ~2 s: every poll starts within 50 ms of start + k·interval, one poll
    per tick, none skipped."""
    listener = Listener()
    run = running(spot_watcher(make_client(), listener, 0.2))
    time.sleep(2.0)
    run.stop()
    starts = listener.starts
    assert 9 <= len(starts) <= 12
    offsets = grid_offsets(starts, starts[0], 0.2)
    assert [k for k, _ in offsets] == list(range(len(starts)))
    assert all(abs(off) < GRID_TOLERANCE for _, off in offsets), offsets
    assert all(r.ok and r.result == "ok" for r in listener.reports)


def test_imds_hang_does_not_delay_the_next_poll(
    sim: ImdsSimulator,
    make_client: MakeClient,
    running: Callable[[Watcher], Running],
) -> None:
    """IMDS hanging 0.5 s (instance-action and the termination-time fallback) with interval
    0.2 s: the poll gives up before the next tick, so every tick still gets its poll, on the
    grid."""
    listener = Listener()
    client = make_client(timeout=1.0)
    run = running(spot_watcher(client, listener, 0.2))
    time.sleep(0.5)
    sim.inject_hang(0.5, count=2)
    time.sleep(1.1)
    run.stop()
    reports = listener.reports
    assert any(not r.ok for r in reports), "the hang should have failed one poll"
    assert all(r.duration < 0.2 for r in reports), [round(r.duration, 3) for r in reports]
    offsets = grid_offsets(listener.starts, reports[0].started, 0.2)
    assert [k for k, _ in offsets] == list(range(len(reports)))
    assert all(abs(off) < GRID_TOLERANCE for _, off in offsets), offsets


def test_overrun_skips_missed_ticks(
    sim: ImdsSimulator,
    make_client: MakeClient,
    running: Callable[[Watcher], Running],
) -> None:
    """A poll that overruns (0.5 s with interval 0.2 s) skips the ticks it missed: no burst of
    back-to-back polls afterwards (every gap ≥ 0.15 s), and later polls are back on the grid."""
    listener = Listener()
    run = running(spot_watcher(make_client(), listener, 0.2))
    time.sleep(0.5)
    listener.slow_once = 0.5
    time.sleep(1.3)
    run.stop()
    starts = listener.starts
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert min(gaps) >= 0.15, gaps
    assert max(gaps) >= 0.5  # the overrun itself
    offsets = grid_offsets(starts, starts[0], 0.2)
    ticks = [k for k, _ in offsets]
    assert len(set(ticks)) == len(ticks) and ticks != list(range(len(ticks)))  # some skipped
    assert all(abs(off) < GRID_TOLERANCE for _, off in offsets), offsets


def test_stop_is_prompt(
    sim: ImdsSimulator,
    make_client: MakeClient,
    running: Callable[[Watcher], Running],
) -> None:
    """stop() ends a loop that is waiting for its next tick (interval 5 s) at once."""
    listener = Listener()
    run = running(spot_watcher(make_client(), listener, 5.0))
    assert listener.polled.wait(2)
    time.sleep(0.1)
    assert run.stop() < 0.3
    assert len(listener.reports) == 1


def test_poke_polls_at_once(
    sim: ImdsSimulator,
    make_client: MakeClient,
    running: Callable[[Watcher], Running],
) -> None:
    """poke() makes the waiting loop poll now instead of at the next tick (interval 5 s)."""
    listener = Listener()
    watcher = spot_watcher(make_client(), listener, 5.0)
    run = running(watcher)
    assert listener.polled.wait(2)
    listener.polled.clear()
    poked = time.monotonic()
    watcher.poke()
    assert listener.polled.wait(1)
    assert listener.reports[-1].started - poked < 0.1
    run.stop()
    assert len(listener.reports) == 2


def test_imds_down_at_start_then_up(
    make_client: MakeClient,
    sim: ImdsSimulator,
    running: Callable[[Watcher], Running],
) -> None:
    """IMDS refusing connections at start: polls fail (no exception escapes the loop), keep the
    grid, and the notice is detected — once — as soon as IMDS answers on the same port."""
    client = make_client(timeout=0.2)
    sim.stop()
    when = sim.raise_notice("terminate", 120)
    listener = Listener()
    run = running(spot_watcher(client, listener, 0.2))
    while len(listener.reports) < 4:
        assert run.thread.is_alive()
        time.sleep(0.02)
    sim.start()
    time.sleep(1.0)
    run.stop()
    reports = listener.reports
    assert not reports[0].ok and reports[0].result == "error"
    assert reports[-1].ok and reports[-1].result == "notice"
    news = [o for _, o in listener.notices if o.change is Change.NEW]
    assert len(news) == 1 and news[0].notice is not None and news[0].notice.time_text == when
    offsets = grid_offsets(listener.starts, reports[0].started, 0.2)
    assert [k for k, _ in offsets] == list(range(len(reports)))
    assert all(abs(off) < GRID_TOLERANCE for _, off in offsets), offsets


def test_notice_reported_once_and_forgotten(sim: ImdsSimulator, make_client: MakeClient) -> None:
    """poll_once: a notice reaches the listener once (NEW), not again while present; after 3
    successful polls without it, FORGOTTEN."""
    listener = Listener()
    watcher = spot_watcher(make_client(), listener, 1.0, rebalance=True)
    sim.raise_notice("stop", 120)
    sim.raise_notice("rebalance", 0)
    for _ in range(3):
        report = watcher.poll_once()
        assert report.result == "notice" and report.notice is not None
        assert "rebalance" in report.known
    assert [(m, o.change) for m, o in listener.notices] == [
        ("spot", Change.NEW),
        ("rebalance", Change.NEW),
    ]
    sim.clear_instance_action()
    for _ in range(3):
        watcher.poll_once()
    assert listener.notices[-1][0] == "spot"
    assert listener.notices[-1][1].change is Change.FORGOTTEN
    assert watcher.poll_once().result == "ok"


def test_rebalance_failure_does_not_fail_the_poll(
    sim: ImdsSimulator, make_client: MakeClient
) -> None:
    """Only the spot monitor decides a poll's result; a failing rebalance path is listed in
    the errors but the poll is ok."""
    listener = Listener()
    watcher = spot_watcher(make_client(), listener, 0.5, rebalance=True)
    sim.set_path("meta-data/events/recommendations/rebalance", 503, "busy")
    report = watcher.poll_once()
    assert report.ok and report.result == "ok"
    assert report.errors and "rebalance" in report.errors[0]


class Exploding(Monitor):
    name = "exploding"

    def __init__(self) -> None:
        self.calls = 0

    def check(self, deadline: float) -> Reading:
        self.calls += 1
        raise RuntimeError("bug in a monitor")


def test_monitor_exception_does_not_end_the_loop(
    running: Callable[[Watcher], Running], caplog: pytest.LogCaptureFixture
) -> None:
    """A monitor raising something unexpected fails that poll (the traceback logged once, not
    every poll); the loop goes on polling."""
    listener = Listener()
    monitor = Exploding()
    watcher = Watcher([monitor], listener, 0.1)
    with caplog.at_level(logging.WARNING, logger="spotwatch.watcher"):
        run = running(watcher)
        time.sleep(0.55)
        run.stop()
    assert monitor.calls >= 4
    assert all(not r.ok and "bug in a monitor" in r.errors[0] for r in listener.reports)
    assert len([r for r in caplog.records if r.exc_info]) == 1


def test_repeated_failures_logged_once_with_count_on_recovery(
    sim: ImdsSimulator, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    """IMDS down for 5 polls: one warning, not five; on recovery the 4 held-back repeats are
    reported, then that IMDS answers again."""
    listener = Listener()
    watcher = spot_watcher(make_client(timeout=0.1), listener, 0.2)
    watcher.poll_once()
    sim.stop()
    with caplog.at_level(logging.INFO, logger="spotwatch.watcher"):
        for _ in range(5):
            assert not watcher.poll_once().ok
        sim.start()
        assert watcher.poll_once().ok
    failed = [r for r in caplog.records if fields(r).get("event") == "poll-failed"]
    assert len(failed) == 2
    assert failed[0].getMessage().startswith("IMDS poll failed")
    assert failed[1].getMessage().startswith("previous message repeated 4 more times")
    assert fields(failed[1])["repeated"] == 4
    recovered = [r for r in caplog.records if fields(r).get("event") == "poll-failed-recovered"]
    assert len(recovered) == 1


def test_one_outage_is_one_line_whatever_the_fallback_said(caplog: pytest.LogCaptureFixture):
    """With IMDS down, the fallback's part of the message varies with the time the retries
    left it ("connection refused", then "no time left in this poll"): still one line."""
    logger = logging.getLogger("spotwatch.test-repeat")
    repeats = RepeatFilter(logger, "x-failed")
    cause = "/latest/meta-data/spot/instance-action: connection refused"
    with caplog.at_level(logging.INFO, logger="spotwatch.test-repeat"):
        for fallback in ("connection refused", "no time left in this poll", "connection refused"):
            repeats.failure(f"IMDS poll failed: {cause}; termination-time: {fallback}", key=cause)
        repeats.failure("IMDS poll failed: other", key="other")
    assert [r.getMessage()[:40] for r in caplog.records] == [
        f"IMDS poll failed: {cause}"[:40],
        "previous message repeated 2 more times: "[:40],
        "IMDS poll failed: other",
    ]


def test_repeat_filter_unit(caplog: pytest.LogCaptureFixture) -> None:
    """RepeatFilter: identical failures log once; a different one flushes the count first;
    recovery flushes and says so; recovery without a failure says nothing."""
    logger = logging.getLogger("spotwatch.test-repeat")
    repeats = RepeatFilter(logger, "x-failed")
    with caplog.at_level(logging.INFO, logger="spotwatch.test-repeat"):
        repeats.recovered("fine")
        assert repeats.failure("a") is True
        assert repeats.failure("a") is False
        assert repeats.failure("a") is False
        assert repeats.failure("b") is True
        repeats.recovered("fine")
    assert [r.getMessage() for r in caplog.records] == [
        "a",
        "previous message repeated 2 more times: a",
        "b",
        "fine",
    ]


def test_watcher_needs_a_monitor() -> None:
    """A watcher without monitors is refused."""
    with pytest.raises(ValueError):
        Watcher([], Listener(), 1.0)


def test_a_very_short_interval_still_polls(
    sim: ImdsSimulator,
    make_client: MakeClient,
    running: Callable[[Watcher], Running],
) -> None:
    """poll_interval 10 ms (benchmarks use it): each poll still gets enough time to ask IMDS
    (a floor of MIN_POLL_BUDGET), so polls succeed instead of all failing for lack of time."""
    listener = Listener()
    run = running(spot_watcher(make_client(), listener, 0.01))
    time.sleep(0.5)
    run.stop()
    assert len(listener.reports) >= 10
    assert all(r.ok for r in listener.reports), [r.errors for r in listener.reports if not r.ok]


def test_a_poll_answered_only_by_the_fallback_is_degraded_and_said_once(
    sim: ImdsSimulator, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    """instance-action failing on every poll while termination-time answers 404: stop and
    hibernate notices cannot be seen, so the poll is `degraded` (not `ok`), and a warning
    says so once for the whole outage; when instance-action answers again, ok."""
    listener = Listener()
    watcher = spot_watcher(make_client(), listener, 0.5)
    sim.set_path("meta-data/spot/instance-action", 500, "broken")
    with caplog.at_level(logging.INFO, logger="spotwatch.watcher"):
        results = [watcher.poll_once().result for _ in range(4)]
        sim.clear_path("meta-data/spot/instance-action")
        results.append(watcher.poll_once().result)
    assert results == ["degraded"] * 4 + ["ok"]
    degraded = [r for r in caplog.records if r.getMessage().startswith("IMDS poll degraded")]
    assert len(degraded) == 1 and degraded[0].levelno == logging.WARNING
    assert "stop and hibernate notices cannot be seen" in degraded[0].getMessage()
    recovered = [r for r in caplog.records if fields(r).get("event") == "poll-degraded-recovered"]
    assert len(recovered) == 1


def test_monitors_of_their_own_cadence_are_asked_only_when_due(
    sim: ImdsSimulator, make_client: MakeClient
) -> None:
    """A monitor with `cadence` 60 s is asked at the first poll and then not again for a
    minute, while the Spot notice is asked every poll; reports are keyed by monitor name."""

    class Slow(RebalanceMonitor):
        name = "slow"
        cadence = 60.0

    client = make_client()
    watcher = Watcher([SpotMonitor(client), Slow(client)], Listener(), 0.2)
    first, second = watcher.poll_once(), watcher.poll_once()
    assert first.monitors["slow"].polled and not second.monitors["slow"].polled
    assert first.monitors["spot"].polled and second.monitors["spot"].polled
    assert sim.count(path="/latest/meta-data/events/recommendations/rebalance") == 1
