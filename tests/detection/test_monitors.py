"""SpotMonitor and RebalanceMonitor against the simulator: notices, fallback, malformed bodies."""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta, timezone
from typing import Callable

import pytest

from spotwatch.clouds.aws.imds import ImdsClient
from spotwatch.clouds.aws.monitors import RebalanceMonitor, SpotMonitor
from spotwatch.detection.notices import (
    SOURCE_INSTANCE_ACTION,
    SOURCE_REBALANCE,
    SOURCE_TERMINATION_TIME,
)
from spotwatch.simulator.imds import (
    INSTANCE_ACTION_PATH,
    TERMINATION_TIME_PATH,
    ImdsSimulator,
    format_time,
)

MakeClient = Callable[..., ImdsClient]
INTERVAL = 1.0


def deadline(interval: float = INTERVAL) -> float:
    return time.monotonic() + interval - 0.05


def malformed_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r for r in caplog.records if getattr(r, "spotwatch", {}).get("event") == "imds-malformed"
    ]


@pytest.mark.parametrize("action", ["terminate", "stop", "hibernate"])
def test_instance_action_notice(sim: ImdsSimulator, make_client: MakeClient, action: str) -> None:
    """A marked instance gives a notice with IMDS's time text, from instance-action."""
    when = sim.raise_notice(action, 120)
    reading = SpotMonitor(make_client()).check(deadline())
    assert reading.ok and reading.notice is not None
    assert reading.notice.action == action
    assert reading.notice.time_text == when
    assert reading.notice.source == SOURCE_INSTANCE_ACTION


def test_no_notice(sim: ImdsSimulator, make_client: MakeClient) -> None:
    """404 on instance-action is a successful poll with no notice; no fallback request."""
    reading = SpotMonitor(make_client()).check(deadline())
    assert reading.ok and reading.notice is None
    assert sim.count("GET", TERMINATION_TIME_PATH) == 0


def test_fallback_when_instance_action_fails_all_interval(
    sim: ImdsSimulator, make_client: MakeClient
) -> None:
    """instance-action answering 500 for the whole interval still leaves time to ask
    termination-time within the same poll: a terminate notice from termination-time."""
    sim.inject_status(500, path=INSTANCE_ACTION_PATH, count=None)
    when = format_time(datetime.now(timezone.utc) + timedelta(seconds=90))
    sim.set_termination_time(when)
    end = deadline()
    reading = SpotMonitor(make_client(timeout=0.3)).check(end)
    assert time.monotonic() <= end + 0.1
    assert reading.ok and reading.notice is not None
    assert reading.notice.action == "terminate"
    assert reading.notice.source == SOURCE_TERMINATION_TIME
    assert reading.notice.time_text == when
    assert sim.count("GET", INSTANCE_ACTION_PATH, 500) >= 2  # it was retried first


def test_fallback_when_instance_action_hangs(sim: ImdsSimulator, make_client: MakeClient) -> None:
    """instance-action hanging on every try: termination-time is still asked in time."""
    sim.inject_hang(5.0, path=INSTANCE_ACTION_PATH, count=None)
    sim.set_termination_time(format_time(datetime.now(timezone.utc) + timedelta(seconds=90)))
    end = deadline()
    reading = SpotMonitor(make_client(timeout=0.3)).check(end)
    assert time.monotonic() <= end + 0.1
    assert reading.ok and reading.notice is not None
    assert reading.notice.source == SOURCE_TERMINATION_TIME


def test_both_failing_is_a_failed_reading(sim: ImdsSimulator, make_client: MakeClient) -> None:
    """Both paths failing: not ok, with both reasons, and by the deadline."""
    sim.inject_status(503, count=None)
    end = deadline(0.5)
    reading = SpotMonitor(make_client(timeout=0.3)).check(end)
    assert time.monotonic() <= end + 0.1
    assert not reading.ok and reading.notice is None
    assert reading.error is not None
    assert "instance-action" in reading.error and "termination-time" in reading.error


def test_non_time_termination_time_is_not_a_notice(
    sim: ImdsSimulator, make_client: MakeClient
) -> None:
    """A termination-time body that is not a time is no notice (a successful poll)."""
    sim.inject_status(500, path=INSTANCE_ACTION_PATH, count=None)
    sim.set_termination_time("not-a-time")
    reading = SpotMonitor(make_client(timeout=0.3)).check(deadline())
    assert reading.ok and reading.notice is None


def test_stale_termination_time_ignored(sim: ImdsSimulator, make_client: MakeClient) -> None:
    """A termination-time more than 10 minutes in the past is EC2's leftover: no notice. One
    9 minutes past is still a notice."""
    sim.set_path(INSTANCE_ACTION_PATH, 200, "garbage")
    monitor = SpotMonitor(make_client())
    sim.set_termination_time(format_time(datetime.now(timezone.utc) - timedelta(minutes=11)))
    reading = monitor.check(deadline())
    assert reading.ok and reading.notice is None
    sim.set_termination_time(format_time(datetime.now(timezone.utc) - timedelta(minutes=9)))
    reading = monitor.check(deadline())
    assert reading.notice is not None and reading.notice.source == SOURCE_TERMINATION_TIME


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'{"action": "reboot", "time": "2026-01-01T00:00:00Z"}',
        b'{"action": "terminate", "time": "soon"}',
        b"\x00\xff\xfe binary garbage \x80",
        b"[" * 100_000,
    ],
    ids=["not-json", "unknown-action", "bad-time", "binary", "deep-nesting"],
)
def test_malformed_instance_action_falls_back_and_logs_once(
    sim: ImdsSimulator, make_client: MakeClient, caplog: pytest.LogCaptureFixture, body: bytes
) -> None:
    """A malformed instance-action body never raises; it falls back to termination-time on
    every poll, and is logged once however often it is seen."""
    sim.set_path(INSTANCE_ACTION_PATH, 200, body)
    when = format_time(datetime.now(timezone.utc) + timedelta(seconds=90))
    sim.set_termination_time(when)
    monitor = SpotMonitor(make_client())
    with caplog.at_level(logging.WARNING, logger="spotwatch.watcher"):
        for _ in range(3):
            reading = monitor.check(deadline())
            assert reading.ok and reading.notice is not None
            assert reading.notice.source == SOURCE_TERMINATION_TIME
    records = malformed_records(caplog)
    assert len(records) == 1
    assert len(records[0].getMessage()) < 400
    assert sim.count("GET", TERMINATION_TIME_PATH, 200) == 3


def test_each_distinct_malformed_body_logged_once(
    sim: ImdsSimulator, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Two different malformed bodies, alternating: each is logged once."""
    monitor = SpotMonitor(make_client())
    with caplog.at_level(logging.WARNING, logger="spotwatch.watcher"):
        for body in ("bad one", "bad two", "bad one", "bad two", "bad one"):
            sim.set_path(INSTANCE_ACTION_PATH, 200, body)
            reading = monitor.check(deadline())
            assert reading.ok and reading.notice is None  # termination-time: 404
    messages = [r.getMessage() for r in malformed_records(caplog)]
    assert len(messages) == 2
    assert "bad one" in messages[0] and "bad two" in messages[1]


def test_other_status_falls_back(sim: ImdsSimulator, make_client: MakeClient) -> None:
    """An unexpected non-transient status (403) on instance-action falls back too."""
    sim.set_path(INSTANCE_ACTION_PATH, 403, "Forbidden")
    sim.set_termination_time(format_time(datetime.now(timezone.utc) + timedelta(seconds=60)))
    reading = SpotMonitor(make_client()).check(deadline())
    assert reading.notice is not None and reading.notice.source == SOURCE_TERMINATION_TIME


def test_rebalance_monitor(sim: ImdsSimulator, make_client: MakeClient) -> None:
    """Rebalance: 404 is none; a noticeTime is a notice; a malformed body is none (logged)."""
    monitor = RebalanceMonitor(make_client())
    reading = monitor.check(deadline())
    assert reading.ok and reading.notice is None
    when = sim.raise_notice("rebalance", 0)
    reading = monitor.check(deadline())
    assert reading.notice is not None
    assert reading.notice.action == "rebalance" and reading.notice.source == SOURCE_REBALANCE
    assert reading.notice.time_text == when
    sim.set_path("meta-data/events/recommendations/rebalance", 200, "{}")
    reading = monitor.check(deadline())
    assert reading.ok and reading.notice is None


def test_rebalance_failure_is_a_failed_reading(sim: ImdsSimulator, make_client: MakeClient) -> None:
    """Rebalance path failing: not ok, by the deadline."""
    sim.inject_status(503, count=None)
    end = deadline(0.4)
    reading = RebalanceMonitor(make_client()).check(end)
    assert time.monotonic() <= end + 0.1
    assert not reading.ok and reading.error is not None and "rebalance" in reading.error
