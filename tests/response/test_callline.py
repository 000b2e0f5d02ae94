"""The line a client's calls wait in (spotwatch.parts.awsapi.callline), with real threads and the
real clock: each throttling bucket has its own line and pacer, since a throttled answer says
something about its bucket only, and the calls that matter most go first in theirs."""

from __future__ import annotations

import threading
import time
from typing import List

import pytest

from spotwatch.parts.awsapi.buckets import bucket_of
from spotwatch.parts.awsapi.callline import CallLine, Ticket

MODIFY = bucket_of("ecs", "stop_task")  # StopTask's bucket
READ = bucket_of("ecs", "list_tasks")  # ListTasks' and DescribeTasks'


def sent_now(line: CallLine, bucket: str, urgent: bool = False, room: float = 30.0) -> float:
    ticket = line.join(bucket, urgent)
    began = time.monotonic()
    assert line.enter(ticket, lambda: room - (time.monotonic() - began)) is not None
    line.answered(ticket, throttled=False, served=True, sent_at=began)
    return time.monotonic() - began


def test_one_bucket_throttled_does_not_hold_back_another() -> None:
    """StopTask was throttled (its bucket's pacer now spaces its calls apart); ListTasks,
    another bucket, still goes at once."""
    line = CallLine(16, seed=1.0)
    stop = line.join(MODIFY, urgent=False)
    sent_at = line.enter(stop, lambda: 30.0)
    assert sent_at is not None
    line.answered(stop, throttled=True, served=False, sent_at=sent_at)
    line.rejoin(stop)

    assert sent_now(line, READ, urgent=True) < 0.1

    began = time.monotonic()
    # Now at least 0.5 s apart (two a second at most): with 0.3 s left it is held until its
    # bound, and leaves.
    assert line.enter(stop, lambda: 0.3 - (time.monotonic() - began)) is None
    assert 0.25 <= time.monotonic() - began < 1.0


def test_the_call_that_matters_most_goes_first_in_its_action_line() -> None:
    """With the gate allowing one call in flight (a DescribeTasks), a final-stop StopTask
    that joins after a stop-step StopTask is let go before it."""
    line = CallLine(1, seed=1.0)
    busy = line.join(READ, urgent=False)
    assert line.enter(busy, lambda: 30.0) is not None  # the one call in flight
    order: List[str] = []
    stop_step = line.join(MODIFY, urgent=False)
    final_stop = line.join(MODIFY, urgent=True)  # joined later

    def call(name: str, ticket: Ticket) -> None:
        began = time.monotonic()
        assert line.enter(ticket, lambda: 30.0) is not None
        order.append(name)
        line.answered(ticket, throttled=False, served=True, sent_at=began)

    callers = [
        threading.Thread(target=call, args=("stop step", stop_step)),
        threading.Thread(target=call, args=("final stop", final_stop)),
    ]
    for caller in callers:
        caller.start()
    line.answered(busy, throttled=False, served=True, sent_at=0.0)
    for caller in callers:
        caller.join(5)
    assert order == ["final stop", "stop step"]


def test_a_long_throttling_storm_never_stops_the_line() -> None:
    """After 1,100 throttled answers in a row (a long storm: ~1,000 was the old limit) the
    next call still goes, within its bound, and so does one that joined behind it. Before,
    the backoff's doubling overflowed: `enter` raised OverflowError and left its ticket
    first in line, so every later call to the bucket waited out its bound, for good."""
    line = CallLine(16, seed=1.0)
    throttled = line.join(MODIFY, urgent=False)
    for _ in range(1100):  # the answers of calls sent in turn (the pacing itself not waited)
        sent_at = time.monotonic()
        line.answered(throttled, throttled=True, served=False, sent_at=sent_at)
    assert line.enter(throttled, lambda: 0.0) is None  # its caller gave up: out of line

    first, behind = line.join(MODIFY, urgent=False), line.join(MODIFY, urgent=False)
    began = time.monotonic()
    assert line.enter(first, lambda: 3.0 - (time.monotonic() - began)) is not None
    line.answered(first, throttled=False, served=True, sent_at=began)
    began = time.monotonic()
    assert line.enter(behind, lambda: 3.0 - (time.monotonic() - began)) is not None


def test_a_call_that_fails_while_in_line_leaves_the_line() -> None:
    """Whatever ends a call while it waits (here its own bound raising), its ticket leaves
    with it: the call behind is not held by a ticket nobody holds."""
    line = CallLine(16, seed=1.0)
    busy = line.join(MODIFY, urgent=False)
    assert line.enter(busy, lambda: 30.0) is not None
    line.answered(busy, throttled=True, served=False, sent_at=time.monotonic())
    broken, behind = line.join(MODIFY, urgent=False), line.join(MODIFY, urgent=False)

    def bound_that_breaks() -> float:
        raise RuntimeError("the caller's bound failed")

    with pytest.raises(RuntimeError):
        line.enter(broken, bound_that_breaks)
    began = time.monotonic()
    assert line.enter(behind, lambda: 3.0 - (time.monotonic() - began)) is not None
