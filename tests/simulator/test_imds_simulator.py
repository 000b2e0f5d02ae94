"""The IMDS simulator, exercised over real HTTP the way spotwatch's client will use it."""

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from email.message import Message
from pathlib import Path
from typing import Dict, Iterator, Optional, Tuple

import pytest
import requests

from spotwatch.simulator.imds import ImdsSimulator

TOKEN_PATH = "/latest/api/token"
TTL = "X-aws-ec2-metadata-token-ttl-seconds"
ACTION = "/latest/meta-data/spot/instance-action"
TERMINATION = "/latest/meta-data/spot/termination-time"
REBALANCE = "/latest/meta-data/events/recommendations/rebalance"
INSTANCE_ID = "/latest/meta-data/instance-id"
REPO = Path(__file__).resolve().parents[2]

Response = Tuple[int, bytes, Message]


@pytest.fixture
def sim() -> Iterator[ImdsSimulator]:
    with ImdsSimulator() as simulator:
        yield simulator


def call(
    sim: ImdsSimulator,
    method: str,
    path: str,
    headers: Optional[Dict[str, str]] = None,
    timeout: float = 5.0,
) -> Response:
    """One request on a fresh connection."""
    conn = http.client.HTTPConnection("127.0.0.1", sim.port, timeout=timeout)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read(), resp.headers
    finally:
        conn.close()


def put_token(sim: ImdsSimulator, ttl: int = 21600) -> str:
    status, body, _ = call(sim, "PUT", TOKEN_PATH, {TTL: str(ttl)})
    assert status == 200
    return body.decode()


def get(sim: ImdsSimulator, path: str, token: Optional[str] = None) -> Response:
    return call(sim, "GET", path, {"X-aws-ec2-metadata-token": token} if token else {})


def get_v2(sim: ImdsSimulator, path: str) -> Response:
    return get(sim, path, put_token(sim))


# --- token rules -----------------------------------------------------------------------------


@pytest.mark.parametrize("ttl", [None, "0", "21601", "-5", "abc", "1.5"])
def test_token_put_needs_ttl_between_1_and_21600(sim: ImdsSimulator, ttl: Optional[str]) -> None:
    """A missing, zero, too large or non-integer TTL header is a 400, as on EC2."""
    status, _, _ = call(sim, "PUT", TOKEN_PATH, {TTL: ttl} if ttl is not None else {})
    assert status == 400
    assert sim.token_puts == 0


def test_token_put_through_a_proxy_is_forbidden(sim: ImdsSimulator) -> None:
    """A token PUT carrying X-Forwarded-For is refused with 403 (IMDS's anti-SSRF rule)."""
    status, _, _ = call(sim, "PUT", TOKEN_PATH, {TTL: "60", "X-Forwarded-For": "10.0.0.1"})
    assert status == 403


def test_valid_token_is_accepted_and_reports_its_ttl(sim: ImdsSimulator) -> None:
    """The PUT answer echoes the TTL; a GET with the token is served and carries the remaining
    whole seconds, never more than the TTL asked for."""
    status, body, headers = call(sim, "PUT", TOKEN_PATH, {TTL: "21600"})
    assert status == 200 and len(body) >= 40
    assert headers[TTL] == "21600"
    status, body, headers = get(sim, INSTANCE_ID, body.decode())
    assert (status, body) == (200, b"i-0123456789abcdef0")
    assert 21598 <= int(headers[TTL]) <= 21600
    assert sim.token_puts == 1


def test_remaining_ttl_decreases_and_token_expires(sim: ImdsSimulator) -> None:
    """The TTL header counts down by the simulator's clock, and a 1 s token is refused with 401
    once that second has passed; a 2 s token outlives it."""
    short, longer = put_token(sim, 1), put_token(sim, 2)
    first = get(sim, INSTANCE_ID, longer)
    assert first[0] == 200 and get(sim, INSTANCE_ID, short)[0] == 200
    time.sleep(1.05)
    assert get(sim, INSTANCE_ID, short)[0] == 401
    second = get(sim, INSTANCE_ID, longer)
    assert second[0] == 200
    assert int(second[2][TTL]) < int(first[2][TTL])


def test_revoked_token_gets_401_and_a_new_one_works(sim: ImdsSimulator) -> None:
    """revoke_tokens() forgets every token (a 401 storm); a fresh PUT recovers."""
    token = put_token(sim)
    sim.revoke_tokens()
    assert get(sim, INSTANCE_ID, token)[0] == 401
    assert get(sim, INSTANCE_ID, put_token(sim))[0] == 200


def test_no_token_is_401_when_imdsv2_only(sim: ImdsSimulator) -> None:
    """IMDSv2-only (the default) refuses token-less GETs."""
    assert get(sim, INSTANCE_ID)[0] == 401


def test_imdsv1_serves_without_token_but_rejects_a_bad_one() -> None:
    """With IMDSv1 allowed, a token-less GET is served; a bad token is still a 401."""
    with ImdsSimulator(imdsv2_only=False) as sim:
        status, body, headers = get(sim, INSTANCE_ID)
        assert (status, body) == (200, b"i-0123456789abcdef0")
        assert TTL not in headers
        assert get(sim, INSTANCE_ID, "not-a-token")[0] == 401


def test_wrong_methods_are_405(sim: ImdsSimulator) -> None:
    """GET on the token path and PUT anywhere else are not allowed."""
    assert call(sim, "GET", TOKEN_PATH, {"X-aws-ec2-metadata-token": put_token(sim)})[0] == 405
    assert call(sim, "PUT", INSTANCE_ID, {TTL: "60"})[0] == 405


# --- what IMDS says --------------------------------------------------------------------------


def test_notice_lifecycle_and_termination_time_mirror(sim: ImdsSimulator) -> None:
    """instance-action is 404, then the JSON notice, then 404 again; termination-time follows a
    terminate notice with the same time and is absent for stop and hibernate."""
    token = put_token(sim)
    assert get(sim, ACTION, token)[0] == 404
    assert get(sim, TERMINATION, token)[0] == 404

    when = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    sim.set_instance_action("terminate", when)
    status, body, headers = get(sim, ACTION, token)
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    assert json.loads(body) == {"action": "terminate", "time": "2030-01-02T03:04:05Z"}
    assert get(sim, TERMINATION, token)[:2] == (200, b"2030-01-02T03:04:05Z")

    for action in ("stop", "hibernate"):
        sim.set_instance_action(action, "2030-01-02T03:04:05Z")
        assert json.loads(get(sim, ACTION, token)[1])["action"] == action
        assert get(sim, TERMINATION, token)[0] == 404

    sim.set_instance_action("terminate", when)
    sim.clear_instance_action()
    assert get(sim, ACTION, token)[0] == 404
    assert get(sim, TERMINATION, token)[0] == 404


def test_notice_default_times(sim: ImdsSimulator) -> None:
    """Without a time, a notice is two minutes ahead, hibernate is now, and raise_notice puts it
    `lead` seconds ahead and returns the very string IMDS serves."""

    def served_time() -> datetime:
        body = json.loads(get_v2(sim, ACTION)[1])
        return datetime.strptime(body["time"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)

    now = datetime.now(timezone.utc)
    sim.set_instance_action("stop")
    assert abs((served_time() - now).total_seconds() - 120) <= 2
    sim.set_instance_action("hibernate")
    assert abs((served_time() - now).total_seconds()) <= 2
    returned = sim.raise_notice("terminate", 30)
    assert json.loads(get_v2(sim, ACTION)[1])["time"] == returned
    assert abs((served_time() - now).total_seconds() - 30) <= 2


def test_rebalance_recommendation(sim: ImdsSimulator) -> None:
    """The rebalance path serves {"noticeTime": ...} once set and 404 once cleared."""
    assert get_v2(sim, REBALANCE)[0] == 404
    sim.set_rebalance(datetime(2030, 5, 6, 7, 8, 9))  # naive: taken as UTC
    status, body, _ = get_v2(sim, REBALANCE)
    assert status == 200 and json.loads(body) == {"noticeTime": "2030-05-06T07:08:09Z"}
    sim.set_rebalance(None)
    assert get_v2(sim, REBALANCE)[0] == 404


def test_set_path_overrides_and_clear_path_restores(sim: ImdsSimulator) -> None:
    """set_path serves any status and body (here a malformed notice) ahead of the built-in
    answer; "meta-data/..." is short for "/latest/meta-data/..."; clear_path undoes it."""
    sim.set_path(ACTION, 200, "{not json")
    assert get_v2(sim, ACTION)[:2] == (200, b"{not json")
    sim.set_path("meta-data/instance-id", 500, b"boom")
    assert get_v2(sim, INSTANCE_ID)[:2] == (500, b"boom")
    sim.clear_path(ACTION)
    sim.clear_path("/latest/meta-data/instance-id")
    assert get_v2(sim, ACTION)[0] == 404
    assert get_v2(sim, INSTANCE_ID)[0] == 200


def test_user_data_bytes_round_trip(sim: ImdsSimulator) -> None:
    """User data comes back byte for byte (gzip is not UTF-8), and is 404 when unset."""
    assert get_v2(sim, "/latest/user-data")[0] == 404
    data = b"\x1f\x8b\x08\x00\xff\xfe" + bytes(range(256))
    sim.set_user_data(data)
    assert get_v2(sim, "/latest/user-data")[:2] == (200, data)
    sim.set_user_data(None)
    assert get_v2(sim, "/latest/user-data")[0] == 404


def test_hibernation_configured(sim: ImdsSimulator) -> None:
    """hibernation/configured says "false" by default, "true" when set, 404 when None."""
    path = "/latest/meta-data/hibernation/configured"
    assert get_v2(sim, path)[:2] == (200, b"false")
    sim.set_hibernation_configured(True)
    assert get_v2(sim, path)[:2] == (200, b"true")
    sim.set_hibernation_configured(None)
    assert get_v2(sim, path)[0] == 404


def test_identity_placement_and_listing() -> None:
    """Region, zone and identity document agree with the constructor; the meta-data listing
    shows spot/ only while a notice is up; unknown paths are 404."""
    with ImdsSimulator(instance_id="i-0abc", region="eu-west-3") as sim:
        assert get_v2(sim, "/latest/meta-data/placement/region")[1] == b"eu-west-3"
        assert get_v2(sim, "/latest/meta-data/placement/availability-zone")[1] == b"eu-west-3a"
        doc = json.loads(get_v2(sim, "/latest/dynamic/instance-identity/document")[1])
        assert doc["instanceId"] == "i-0abc" and doc["region"] == "eu-west-3"
        assert doc["availabilityZone"] == "eu-west-3a" and doc["accountId"]

        listing = get_v2(sim, "/latest/meta-data/")[1].decode().splitlines()
        assert "instance-id" in listing and "placement/" in listing
        assert "spot/" not in listing
        sim.raise_notice("stop", 120)
        assert "spot/" in get_v2(sim, "/latest/meta-data/")[1].decode().splitlines()
        assert get_v2(sim, "/latest/meta-data/spot/")[1] == b"instance-action"
        assert get_v2(sim, "/latest/meta-data/no-such-thing")[0] == 404


# --- faults ----------------------------------------------------------------------------------


def test_injected_status_for_count_requests_then_normal(sim: ImdsSimulator) -> None:
    """inject_status answers its status for exactly `count` matching requests, only under its
    path prefix; then the normal answer returns."""
    token = put_token(sim)
    sim.inject_status(503, path=ACTION, count=2)
    assert get(sim, INSTANCE_ID, token)[0] == 200  # other paths unaffected
    assert [get(sim, ACTION, token)[0] for _ in range(3)] == [503, 503, 404]


def test_injected_status_covers_token_put_and_lasts_until_cleared(sim: ImdsSimulator) -> None:
    """path "" matches the token PUT too; count=None keeps failing until clear_faults()."""
    sim.inject_status(429, count=None)
    for _ in range(3):
        assert call(sim, "PUT", TOKEN_PATH, {TTL: "60"})[0] == 429
    sim.clear_faults()
    assert call(sim, "PUT", TOKEN_PATH, {TTL: "60"})[0] == 200


def test_injected_hang_delays_the_answer(sim: ImdsSimulator) -> None:
    """inject_hang holds the answer back (a client timeout fires), once; the next is prompt."""
    token = put_token(sim)
    sim.inject_hang(0.4, path=ACTION)
    started = time.monotonic()
    assert get(sim, ACTION, token)[0] == 404
    assert time.monotonic() - started >= 0.4

    sim.inject_hang(1.0, path=ACTION)
    with pytest.raises(socket.timeout):
        call(sim, "GET", ACTION, {"X-aws-ec2-metadata-token": token}, timeout=0.2)
    started = time.monotonic()
    assert get(sim, ACTION, token)[0] == 404
    assert time.monotonic() - started < 0.3


def test_constructor_delay_slows_every_answer() -> None:
    """delay= (simulate-imds --delay) applies to every request, the token PUT included."""
    with ImdsSimulator(delay=0.2) as sim:
        started = time.monotonic()
        get_v2(sim, INSTANCE_ID)
        assert time.monotonic() - started >= 0.4


def test_injected_reset_is_a_connection_error(sim: ImdsSimulator) -> None:
    """inject_reset drops the connection unanswered: the client sees a connection error (as
    requests reports it), counted with status 0; the next request is answered."""
    token = put_token(sim)
    sim.inject_reset(path=ACTION)
    with pytest.raises(requests.ConnectionError):
        requests.get(sim.endpoint + ACTION, headers={"X-aws-ec2-metadata-token": token}, timeout=5)
    assert sim.count("GET", ACTION, 0) == 1
    assert get(sim, ACTION, token)[0] == 404


# --- counters, connections, lifecycle --------------------------------------------------------


def test_counters_and_log(sim: ImdsSimulator) -> None:
    """count() filters by method, exact path (query ignored) and status; token_puts counts only
    successful PUTs; the log records each request; reset_counters() starts over."""
    token = put_token(sim)
    call(sim, "PUT", TOKEN_PATH, {})  # 400: not a successful PUT
    get(sim, ACTION + "?x=1", token)
    get(sim, ACTION, token)
    get(sim, INSTANCE_ID, token)
    assert sim.token_puts == 1
    assert sim.count() == 5
    assert sim.count("get") == 3
    assert sim.count(path=ACTION) == 2
    assert sim.count("GET", ACTION, 404) == 2
    assert sim.count(status=400) == 1
    log = sim.requests_log
    assert [entry[1:] for entry in log[-2:]] == [("GET", ACTION, 404), ("GET", INSTANCE_ID, 200)]
    assert log[0][0] <= log[-1][0] <= time.monotonic()
    sim.reset_counters()
    assert sim.count() == 0 and sim.token_puts == 0 and sim.requests_log == []


def test_concurrent_requests_are_all_counted(sim: ImdsSimulator) -> None:
    """Parallel clients are served and counted without loss."""
    token = put_token(sim)

    def worker() -> None:
        for _ in range(5):
            assert get(sim, INSTANCE_ID, token)[0] == 200

    threads = [threading.Thread(target=worker) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sim.count("GET", INSTANCE_ID, 200) == 50


def test_keep_alive_reuses_one_connection(sim: ImdsSimulator) -> None:
    """The token PUT and several GETs travel over a single HTTP/1.1 connection."""
    conn = http.client.HTTPConnection("127.0.0.1", sim.port, timeout=5)
    try:
        conn.request("PUT", TOKEN_PATH, headers={TTL: "60"})
        resp = conn.getresponse()
        token = resp.read().decode()
        first_socket = conn.sock
        assert first_socket is not None
        for path in (INSTANCE_ID, ACTION, INSTANCE_ID):
            conn.request("GET", path, headers={"X-aws-ec2-metadata-token": token})
            resp = conn.getresponse()
            resp.read()
            assert resp.status in (200, 404)
            assert conn.sock is first_socket
    finally:
        conn.close()


def test_stop_is_idempotent_frees_the_port_and_closes_idle_connections() -> None:
    """stop() twice is fine; an idle keep-alive connection is closed by the server; the port
    can be bound again; start() again serves on the same endpoint with the state kept."""
    sim = ImdsSimulator().start()
    endpoint, port = sim.endpoint, sim.port
    sim.raise_notice("terminate", 60)
    idle = socket.create_connection(("127.0.0.1", port), timeout=5)
    idle.sendall(b"PUT /latest/api/token HTTP/1.1\r\nHost: x\r\n" + TTL.encode() + b": 60\r\n\r\n")
    assert idle.recv(4096).startswith(b"HTTP/1.1 200")

    sim.stop()
    sim.stop()
    try:
        # The server closes it (EOF after any rest of the answer) rather than leaving it
        # dangling, which would make this recv time out.
        while idle.recv(4096):
            pass
    finally:
        idle.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    probe = socket.socket()
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    probe.bind(("127.0.0.1", port))
    probe.close()

    with sim.start():
        assert sim.endpoint == endpoint
        assert get_v2(sim, ACTION)[0] == 200


def test_stop_does_not_wait_for_a_hanging_request() -> None:
    """A request stuck in an injected hang does not hold stop() up."""
    sim = ImdsSimulator(imdsv2_only=False).start()
    sim.inject_hang(30)
    outcome = []

    def client() -> None:
        try:
            get(sim, INSTANCE_ID)
            outcome.append("answered")
        except OSError:
            outcome.append("dropped")

    thread = threading.Thread(target=client)
    thread.start()
    time.sleep(0.2)
    started = time.monotonic()
    sim.stop()
    assert time.monotonic() - started < 2
    thread.join(5)
    assert outcome == ["dropped"]


def test_quiet_by_default(capfd: pytest.CaptureFixture[str]) -> None:
    """Without verbose=True nothing reaches stdout or stderr, not even for a reset."""
    with ImdsSimulator() as sim:
        get_v2(sim, INSTANCE_ID)
        sim.inject_reset()
        with pytest.raises(OSError):
            get(sim, INSTANCE_ID)
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")


def test_serve_prints_endpoint_and_stops_on_sigterm() -> None:
    """serve() (the simulate-imds command) prints its endpoint on one line when ready, serves
    the notice it was asked to raise, and exits cleanly on SIGTERM."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    code = (
        "from spotwatch.clouds.cloud import SimulateRequest\n"
        "from spotwatch.commands.simulate import serve\n"
        "serve(SimulateRequest(action='stop', lead=90))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, env=env, text=True
    )
    try:
        assert proc.stdout is not None
        endpoint = proc.stdout.readline().strip()
        assert endpoint.startswith("http://127.0.0.1:")
        token = requests.put(endpoint + TOKEN_PATH, headers={TTL: "60"}, timeout=5).text
        answer = requests.get(
            endpoint + ACTION, headers={"X-aws-ec2-metadata-token": token}, timeout=5
        )
        notice = answer.json()
        assert notice["action"] == "stop"
        deadline = datetime.strptime(notice["time"], "%Y-%m-%dT%H:%M:%SZ")
        ahead = deadline.replace(tzinfo=timezone.utc) - datetime.now(timezone.utc)
        assert timedelta(seconds=85) <= ahead <= timedelta(seconds=91)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
