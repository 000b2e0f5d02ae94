"""ImdsClient over real HTTP against the simulator: tokens, faults, deadlines, IMDSv1."""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, List

import pytest

from spotwatch.clouds.aws.imds import ImdsClient, ImdsError
from spotwatch.simulator.imds import (
    INSTANCE_ACTION_PATH,
    TOKEN_PATH,
    ImdsSimulator,
)

ACTION = "meta-data/spot/instance-action"
INSTANCE_ID = "meta-data/instance-id"
MakeClient = Callable[..., ImdsClient]
# How late a call may return after its deadline: scheduling noise, not a retry.
SLACK = 0.1


def poll_for(client: ImdsClient, *, seconds: float, every: float) -> int:
    """Poll instance-action (404: no notice) every `every` s for `seconds`; the poll count."""
    end = time.monotonic() + seconds
    polls = 0
    while time.monotonic() < end:
        assert client.get(ACTION).status == 404
        polls += 1
        time.sleep(every)
    return polls


def test_token_reused_on_one_connection(
    sim: ImdsSimulator, make_client: MakeClient, connections: List[object]
) -> None:
    """50 polls cost one token PUT and one TCP connection (keep-alive, token reuse)."""
    client = make_client()
    for _ in range(50):
        reply = client.get(ACTION)
        assert reply.status == 404
    assert sim.token_puts == 1
    assert sim.count("GET", INSTANCE_ACTION_PATH, 404) == 50
    assert len(connections) == 1
    assert client.token_renewals == 1 and client.requests == 51


def test_token_renewed_before_expiry_without_401(
    sim: ImdsSimulator, make_client: MakeClient
) -> None:
    """With a 2 s TTL, polling every 0.2 s for ~5 s renews the token ahead of expiry:
    several PUTs, and IMDS never has to answer 401."""
    client = make_client(token_ttl=2)
    polls = poll_for(client, seconds=5.0, every=0.2)
    assert sim.count(status=401) == 0
    assert 2 <= sim.token_puts <= polls // 3, (sim.token_puts, polls)


def test_a_shorter_granted_ttl_does_not_cause_a_token_storm() -> None:
    """IMDS may grant less than the 6 h asked for (here 2 s). Renewal is judged by the granted
    lifetime: polling every 0.1 s for 3 s takes a handful of PUTs, not one before every GET
    (before the fix the 60 s margin of a 6 h token made a 2 s token look expired at once)."""
    with ImdsSimulator(max_token_ttl=2) as sim:
        client = ImdsClient(sim.endpoint)
        try:
            polls = poll_for(client, seconds=3.0, every=0.1)
        finally:
            client.close()
    assert sim.count(status=401) == 0
    assert 1 <= sim.token_puts <= 6, (sim.token_puts, polls)


def test_token_renewed_after_401(sim: ImdsSimulator, make_client: MakeClient) -> None:
    """A revoked token: the next get is answered 401 once, renews at once, retries, succeeds."""
    client = make_client()
    assert client.get(INSTANCE_ID).status == 200
    sim.revoke_tokens()
    reply = client.get(INSTANCE_ID)
    assert reply.status == 200 and reply.body == sim.instance_id.encode()
    assert sim.token_puts == 2
    assert sim.count(status=401) == 1
    assert client.get(INSTANCE_ID).status == 200
    assert sim.token_puts == 2


def test_invalidate_token_forces_a_put(sim: ImdsSimulator, make_client: MakeClient) -> None:
    """`invalidate_token` (after a resume) makes the next get fetch a new token."""
    client = make_client()
    client.get(ACTION)
    assert client.has_token
    client.invalidate_token()
    assert not client.has_token
    client.get(ACTION)
    assert sim.token_puts == 2


@pytest.mark.parametrize("status", [503, 500, 429])
def test_error_burst_answered_within_one_interval(
    sim: ImdsSimulator, make_client: MakeClient, status: int
) -> None:
    """Three transient errors in a row (on the token PUT and the GET alike) are retried with
    backoff and the get is still answered within one 2 s poll interval."""
    client = make_client()
    sim.inject_status(status, count=3)
    started = time.monotonic()
    reply = client.get(ACTION, deadline=started + 2.0)
    assert reply.status == 404
    assert time.monotonic() - started < 2.0
    assert sim.count(status=status) == 3


def test_hang_longer_than_timeout_is_retried(sim: ImdsSimulator, make_client: MakeClient) -> None:
    """A request hanging 1 s with timeout=0.3 times out, is retried on a fresh connection and
    answered well before the deadline."""
    client = make_client(timeout=0.3)
    client.get(ACTION)  # token in hand
    sim.inject_hang(1.0, path=INSTANCE_ACTION_PATH)
    started = time.monotonic()
    deadline = started + 1.0
    reply = client.get(ACTION, deadline=deadline)
    finished = time.monotonic()
    assert reply.status == 404
    assert 0.3 <= finished - started < 1.0


def test_persistent_hang_gives_up_by_the_deadline(
    sim: ImdsSimulator, make_client: MakeClient
) -> None:
    """IMDS hanging on every request: ImdsError, raised by the deadline, not one timeout later."""
    client = make_client(timeout=0.3)
    client.get(ACTION)
    sim.inject_hang(5.0, count=None)
    started = time.monotonic()
    deadline = started + 0.8
    with pytest.raises(ImdsError, match="timed out"):
        client.get(ACTION, deadline=deadline)
    assert time.monotonic() <= deadline + SLACK


@pytest.mark.parametrize("status", [503, 429])
def test_persistent_errors_never_overrun_the_deadline(
    sim: ImdsSimulator, make_client: MakeClient, status: int
) -> None:
    """Retries of a transient status stop before the deadline: ImdsError naming the last failure
    (the status, or a time-out when the last try had little time left)."""
    client = make_client()
    client.get(ACTION)
    sim.inject_status(status, count=None)
    for budget in (0.05, 0.3, 1.0):
        started = time.monotonic()
        with pytest.raises(ImdsError, match=f"HTTP {status}|timed out"):
            client.get(ACTION, deadline=started + budget)
        assert time.monotonic() <= started + budget + SLACK
    assert sim.count(status=status) >= 3


def test_reset_connection_is_retried(sim: ImdsSimulator, make_client: MakeClient) -> None:
    """Connections reset unanswered (RST) are retried; the get is answered."""
    client = make_client()
    client.get(ACTION)
    sim.inject_reset(path=INSTANCE_ACTION_PATH, count=2)
    started = time.monotonic()
    assert client.get(ACTION, deadline=started + 1.0).status == 404
    assert sim.count(status=0) == 2
    assert time.monotonic() - started < 1.0


def test_reconnect_after_reset_respects_the_deadline(
    sim: ImdsSimulator, make_client: MakeClient
) -> None:
    """A kept-alive connection reset after a slow start is reopened at once, but the second try
    gets only the time left before the deadline, not a fresh `timeout`."""
    client = make_client(timeout=2.0)
    client.get(ACTION)
    sim.inject_hang(0.4, path=INSTANCE_ACTION_PATH, count=2)
    sim.inject_reset(path=INSTANCE_ACTION_PATH, count=1)
    started = time.monotonic()
    deadline = started + 0.6
    with pytest.raises(ImdsError):
        client.get(ACTION, deadline=deadline)
    assert time.monotonic() <= deadline + SLACK


def test_refused_then_up(sim: ImdsSimulator, make_client: MakeClient) -> None:
    """IMDS down (connection refused): ImdsError by the deadline; once it is back on the same
    port, the next get is answered on a new connection."""
    client = make_client()
    client.get(ACTION)
    sim.stop()
    started = time.monotonic()
    with pytest.raises(ImdsError, match=r"refused|closed|reset"):
        client.get(ACTION, deadline=started + 0.3)
    assert time.monotonic() <= started + 0.3 + SLACK
    sim.start()
    assert client.get(ACTION, deadline=time.monotonic() + 1.0).status == 404


def test_cancel_ends_retries_at_once(sim: ImdsSimulator) -> None:
    """With the cancel event set (daemon stopping), a failing get gives up after one attempt."""
    cancel = threading.Event()
    cancel.set()
    client = ImdsClient(sim.endpoint, cancel=cancel)
    try:
        sim.inject_status(503, count=None)
        started = time.monotonic()
        with pytest.raises(ImdsError, match="stopping"):
            client.get(ACTION, deadline=started + 5.0)
        assert time.monotonic() - started < 0.5
    finally:
        client.close()


def test_imdsv1_fallback_warns_once(
    sim: ImdsSimulator, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    """allow_imdsv1 with the token PUT refused (403): gets go through without a token and the
    fallback is logged exactly once, however many gets follow."""
    sim.imdsv2_only = False
    sim.inject_status(403, path=TOKEN_PATH, count=None)
    client = make_client(allow_imdsv1=True)
    with caplog.at_level(logging.DEBUG, logger="spotwatch.imds"):
        for _ in range(10):
            assert client.get(INSTANCE_ID).status == 200
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "IMDSv1" in warnings[0].getMessage()
    assert sim.count("GET", "/latest/meta-data/instance-id", 200) == 10
    assert not client.has_token


def test_imdsv1_fallback_does_not_retry_put_every_get(
    sim: ImdsSimulator, make_client: MakeClient
) -> None:
    """Once fallen back to IMDSv1, the client does not ask for a token before every get (a token
    PUT that times out, as behind a hop limit, would cost `timeout` per request)."""
    sim.imdsv2_only = False
    sim.inject_hang(5.0, path=TOKEN_PATH, count=None)
    client = make_client(allow_imdsv1=True, timeout=0.3)
    started = time.monotonic()
    for _ in range(10):
        assert client.get(INSTANCE_ID, deadline=time.monotonic() + 1.0).status == 200
    assert time.monotonic() - started < 1.5
    assert sim.count("GET", "/latest/meta-data/instance-id", 200) == 10


def test_imdsv1_fallback_returns_to_imdsv2_on_401(
    sim: ImdsSimulator, make_client: MakeClient
) -> None:
    """In IMDSv1 fallback, a 401 to a tokenless get (IMDS now requires IMDSv2) makes the client
    ask for a token at once and retry, instead of waiting out its IMDSv1 hold-off."""
    sim.imdsv2_only = False
    sim.inject_status(403, path=TOKEN_PATH, count=None)
    client = make_client(allow_imdsv1=True)
    assert client.get(INSTANCE_ID).status == 200
    sim.clear_faults()
    sim.imdsv2_only = True
    assert client.get(INSTANCE_ID).status == 200
    assert client.has_token and sim.token_puts == 1
    assert sim.count(status=401) == 1


def test_no_imdsv1_without_permission(sim: ImdsSimulator, make_client: MakeClient) -> None:
    """Without allow_imdsv1 a refused token PUT is an ImdsError, and no tokenless GET is sent."""
    sim.imdsv2_only = False
    sim.inject_status(403, path=TOKEN_PATH, count=None)
    client = make_client()
    with pytest.raises(ImdsError, match="403"):
        client.get(INSTANCE_ID)
    assert sim.count("GET") == 0


def test_endpoint_must_be_http() -> None:
    """Only plain http://host[:port] endpoints are accepted."""
    for bad in ("https://169.254.169.254", "169.254.169.254", "http://"):
        with pytest.raises(ValueError):
            ImdsClient(bad)


def test_a_retry_woken_too_late_reports_the_outage_not_the_lateness(sim: ImdsSimulator) -> None:
    """IMDS answers 503; the retry's pause ends after the poll's deadline (a loaded host wakes
    late: here the clock jumps 100 s once the 503 was weighed). The error names the outage,
    HTTP 503, not "no time left in this poll": one outage must read the same on every poll,
    or the watcher's once-per-outage warning becomes one per poll."""
    calls_after_503 = [0]

    def late_clock() -> float:
        if sim.count(status=503):
            calls_after_503[0] += 1
        # The first read after the 503 decides to retry; every later one has woken late.
        return time.monotonic() + (100.0 if calls_after_503[0] >= 2 else 0.0)

    client = ImdsClient(sim.endpoint, clock=late_clock)
    try:
        client.get(ACTION)  # its own token, before the outage
        sim.inject_status(503, count=None)
        with pytest.raises(ImdsError) as raised:
            client.get(ACTION, deadline=time.monotonic() + 5.0)
        assert "HTTP 503" in str(raised.value) and "no time left" not in str(raised.value)
    finally:
        client.close()
