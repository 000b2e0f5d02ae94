"""The retry policy: bounded by the time left, not by a count; full jitter; a gate per client."""

from __future__ import annotations

import random

import pytest

from spotwatch.parts.awsapi.retry import (
    DEFAULT,
    URGENT_CAP,
    DeadlineBackoff,
    Gate,
    Pacer,
    is_retryable,
    is_throttling,
)


def test_retries_go_on_while_time_allows_however_many_attempts_came_before() -> None:
    """Also after thousands in a row (a client's throttling streak counts as attempts): the
    doubling stops at the cap instead of overflowing a float (it raised OverflowError)."""
    rng = random.Random(1)
    for attempt in (1, 5, 50, 500, 1025, 5_000, 10**9):
        wait = DEFAULT.delay(attempt, 60.0, rng)
        assert wait is not None and 0.0 <= wait <= DEFAULT.cap


def test_no_wait_leaves_less_than_an_attempt_needs_and_no_room_means_give_up() -> None:
    rng = random.Random(2)
    for left in (0.5, 1.0, 3.0, 9.0):
        for attempt in range(1, 20):
            wait = DEFAULT.delay(attempt, left, rng)
            assert wait is not None
            assert left - wait >= DEFAULT.least_attempt - 1e-9
    assert DEFAULT.delay(1, DEFAULT.least_attempt, rng) is None
    assert DEFAULT.delay(1, 0.0, rng) is None


def test_waits_grow_exponentially_with_full_jitter() -> None:
    policy = DeadlineBackoff(base=0.25, cap=8.0)
    rng = random.Random(3)
    first = [policy.delay(1, 100.0, rng) or 0.0 for _ in range(2000)]
    sixth = [policy.delay(6, 100.0, rng) or 0.0 for _ in range(2000)]
    assert max(first) <= 0.25 and max(sixth) <= 8.0
    assert min(sixth) < 0.5  # full jitter: anywhere from 0, so a fleet spreads
    assert 3.0 < sum(sixth) / len(sixth) < 5.0  # uniform on [0, 8]


def test_urgent_calls_come_back_sooner() -> None:
    urgent = DEFAULT.urgent()
    rng = random.Random(4)
    assert all((urgent.delay(10, 100.0, rng) or 0.0) <= URGENT_CAP for _ in range(500))
    assert urgent.least_attempt == DEFAULT.least_attempt


def test_the_gate_halves_on_throttling_and_opens_one_by_one() -> None:
    gate = Gate(16)
    for _ in range(16):
        assert gate.may_send()
        gate.sent()
    assert not gate.may_send()
    for _ in range(16):
        gate.answered(throttled=True)
    assert gate.allowed == 1 and gate.in_flight == 0
    gate.sent()
    assert not gate.may_send()
    gate.answered(throttled=False)
    assert gate.allowed == 2
    for _ in range(200):  # one more per `allowed` served answers
        gate.answered(throttled=False)
    assert gate.allowed == 16


def test_a_throttled_client_reckons_new_calls_from_its_streak() -> None:
    gate = Gate(16)
    for _ in range(5):
        gate.sent()
        gate.answered(throttled=True)
    assert gate.backoff_attempt(1) == 5
    gate.sent()
    gate.answered(throttled=False)
    assert gate.backoff_attempt(1) == 1


def test_what_counts_as_throttling_and_as_worth_another_try() -> None:
    assert is_throttling("ThrottlingException") and is_throttling("RequestLimitExceeded")
    assert is_throttling("", 429)
    assert is_retryable("ThrottlingException", 400)
    assert is_retryable("InternalError", 500) and is_retryable("", 503)
    assert is_retryable("", None)  # no answer at all
    assert not is_retryable("AccessDeniedException", 400)
    assert not is_retryable("InvalidParameterException", 400)
    assert not is_retryable("DryRunOperation", 412)


def test_the_pacer_sends_freely_until_throttled_then_halves_what_it_was_sending() -> None:
    rng = random.Random(1)
    pacer = Pacer()
    for t in range(10):  # 10 calls in the last 10 s: 1 a second, unpaced
        pacer.sent(float(t), rng)
        assert pacer.ready_at() == float("-inf")
        pacer.answered(t + 0.03, throttled=False, sent_at=float(t))
    pacer.answered(9.5, throttled=True, sent_at=9.0)
    assert pacer.rate == 0.5
    assert pacer.ready_at() >= 9.5 + 1.0  # once throttled: backoff 1 s, before 2 s paced
    pacer.answered(9.6, throttled=True, sent_at=9.0)  # sent before the cut: no new cut
    assert pacer.rate == 0.5
    pacer.sent(20.0, rng)  # twice throttled in a row: backoff 2 s, as paced
    assert 20.0 + 0.5 * 2 <= pacer.ready_at() <= 20.0 + 1.5 * 2  # jittered 1 / rate


def test_the_pacer_grows_with_time_served_and_never_falls_below_its_floor() -> None:
    pacer = Pacer()
    pacer.answered(0.0, throttled=True, sent_at=0.0)  # nothing sent in its window
    assert pacer.rate == pacer.floor
    pacer.answered(10.0, throttled=False, sent_at=9.9)
    assert pacer.rate == pytest.approx(pacer.floor + pacer.gain * 10)


def test_calls_with_their_bound_near_are_spaced_by_what_they_need() -> None:
    rng = random.Random(1)
    pacer = Pacer()
    pacer.answered(0.0, throttled=True, sent_at=0.0)  # 16 s apart at the floor
    pacer.sent(1.0, rng)
    assert pacer.ready_at(waiting=11, room=40.0) <= 1.0 + 1.5 * 40.0 / (2 * 11)  # half the room


def test_the_spacing_is_reckoned_when_asked_so_calls_joining_a_quiet_line_are_not_held() -> None:
    """A lone call throttled at the floor would wait ~16 s; the 15 final-stop calls that join
    after it was sent are spaced by what they need, not by what the lone call needed."""
    rng = random.Random(1)
    pacer = Pacer()
    for t in range(5):  # throttled five times in a row: 1, 2, 4, 8, then 16 s apart
        pacer.answered(float(t), throttled=True, sent_at=float(t))
    pacer.sent(5.0, rng)
    assert pacer.ready_at() >= 5.0 + 0.5 * 16
    assert pacer.ready_at(waiting=15, room=30.0) <= 5.0 + 1.5 * 30.0 / (2 * 15)


def test_hurrying_is_never_faster_than_four_times_the_rate_or_two_calls_a_second() -> None:
    rng = random.Random(1)
    pacer = Pacer()
    pacer.answered(0.0, throttled=True, sent_at=0.0)
    pacer.rate = 0.5  # 2 s apart when paced
    pacer.sent(10.0, rng)
    # 100 calls in 10 s would need 0.05 s apart: hurried to 4x the rate, 0.5 s, no more.
    assert pacer.ready_at(waiting=100, room=10.0) >= 10.0 + 0.5 * 0.5
    pacer.rate = pacer.floor  # 16 s apart: 4x would still be 4 s, so two a second
    pacer.sent(20.0, rng)
    assert 20.0 + 0.5 * 0.5 <= pacer.ready_at(waiting=100, room=10.0) <= 20.0 + 1.5 * 0.5
