"""Counterexamples the property-based suites found, kept as plain, fast regression tests."""

from __future__ import annotations

import socket
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Iterator, List, Optional

import pytest
from testkit import response_record

from spotwatch.clouds.aws.imds import ImdsClient, ImdsError
from spotwatch.clouds.aws.monitors import RebalanceMonitor, SpotMonitor
from spotwatch.detection.monitors import Monitor
from spotwatch.detection.notices import Notice
from spotwatch.detection.tracker import Observation
from spotwatch.detection.watcher import PollReport, Watcher
from spotwatch.simulator.imds import (
    INSTANCE_ACTION_PATH,
    REBALANCE_PATH,
    ImdsSimulator,
    format_time,
)


class Listener:
    def __init__(self) -> None:
        self.new: List[Notice] = []

    def on_notice(self, monitor: str, observation: Observation) -> None:
        if observation.change.value == "new" and observation.notice is not None:
            self.new.append(observation.notice)

    def on_poll(self, report: PollReport) -> None:
        pass


@pytest.fixture
def sim() -> Iterator[ImdsSimulator]:
    with ImdsSimulator() as simulator:
        yield simulator


def watcher_for(sim: ImdsSimulator, listener: Listener, rebalance: bool = False) -> Watcher:
    client = ImdsClient(sim.endpoint, timeout=0.2)
    monitors: List[Monitor] = [SpotMonitor(client)]
    if rebalance:
        monitors.append(RebalanceMonitor(client))
    return Watcher(monitors, listener, 1.0)


def poll(watcher: Watcher) -> None:
    watcher.poll_once(deadline=time.monotonic() + 0.5)


@pytest.mark.parametrize("action", ["stop", "hibernate"])
@pytest.mark.parametrize("broken", ["503", "malformed"])
def test_fallback_none_is_no_evidence_that_a_stop_notice_went_away(
    sim: ImdsSimulator, action: str, broken: str
) -> None:
    """Found by test_stateful_daemon: a stop (or hibernate) notice, then instance-action gave
    no usable answer for 3 polls. The termination-time fallback answered 404 (it only ever
    shows terminate notices), which counted as 3 polls of absence: the notice was forgotten
    and, when instance-action answered again, handled a second time."""
    listener = Listener()
    watcher = watcher_for(sim, listener)
    sim.set_instance_action(action, format_time(datetime.now(timezone.utc) + timedelta(minutes=2)))
    poll(watcher)
    assert len(listener.new) == 1
    if broken == "503":
        sim.inject_status(503, path=INSTANCE_ACTION_PATH, count=None)
    else:
        sim.set_path(INSTANCE_ACTION_PATH, 200, b"{not json")
    for _ in range(4):
        poll(watcher)
    sim.clear_faults()
    sim.clear_path(INSTANCE_ACTION_PATH)
    poll(watcher)
    assert len(listener.new) == 1, "the same notice was handled twice"


def test_fallback_still_forgets_a_terminate_notice_that_is_gone(sim: ImdsSimulator) -> None:
    """termination-time does speak for terminate notices: its 404 counts as absence."""
    listener = Listener()
    watcher = watcher_for(sim, listener)
    sim.set_instance_action("terminate")
    poll(watcher)
    sim.clear_instance_action()
    sim.inject_status(503, path=INSTANCE_ACTION_PATH, count=None)
    for _ in range(3):
        poll(watcher)
    sim.clear_faults()
    sim.set_instance_action("terminate")
    poll(watcher)
    assert len(listener.new) == 2


def test_a_malformed_rebalance_body_is_not_the_recommendations_absence(sim: ImdsSimulator) -> None:
    """Found by test_stateful_daemon: a garbled rebalance body for 3 polls counted as absence,
    so a recommendation still standing was handled again afterwards."""
    listener = Listener()
    watcher = watcher_for(sim, listener, rebalance=True)
    sim.set_rebalance(datetime.now(timezone.utc))
    poll(watcher)
    sim.set_path(REBALANCE_PATH, 200, b"[]")
    for _ in range(4):
        poll(watcher)
    sim.clear_path(REBALANCE_PATH)
    poll(watcher)
    actions: List[Optional[str]] = [n.action for n in listener.new]
    assert actions == ["rebalance"]


class TokenServer:
    """A one-answer-per-connection HTTP server: the token PUT gets `token`, a GET 404."""

    def __init__(self, token: bytes) -> None:
        self.token = token
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.endpoint = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.gets: List[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                request = conn.recv(65536)
                if request.startswith(b"PUT"):
                    body, status = self.token, b"200 OK"
                else:
                    self.gets.append(request)
                    body, status = b"", b"404 Not Found"
                head = (
                    b"HTTP/1.1 " + status + b"\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                )
                conn.sendall(head % len(body) + body)


@pytest.mark.parametrize("token", [b"\x00\x00\x00\x80", b"abc\r\nX-Injected: 1", "tök".encode()])
def test_a_garbage_token_is_not_kept(token: bytes) -> None:
    """Found by test_fuzz_inputs: a token PUT answered with bytes outside printable ASCII was
    kept as the token; every GET then raised UnicodeEncodeError (not an ImdsError) building
    its header, until the token's TTL ran out (up to 6 h of failed polls). CR/LF in it would
    have injected headers. Now such an answer is a failed (retried) token request."""
    server = TokenServer(token)
    client = ImdsClient(server.endpoint, timeout=0.2)
    try:
        with pytest.raises(ImdsError):
            client.get("meta-data/spot/instance-action", deadline=time.monotonic() + 0.3)
        assert not client.has_token and server.gets == []
        server.token = b"AQAEAKx7_good-token=="
        reply = client.get("meta-data/spot/instance-action", deadline=time.monotonic() + 0.5)
        assert reply.status == 404 and b"AQAEAKx7_good-token==" in server.gets[-1]
    finally:
        client.close()
        server.sock.close()


@pytest.mark.parametrize("key", ["\n", "a\nb: c", "\u202eevil", "x" * 300, 5, True])
def test_an_unknown_key_is_reported_on_one_line(tmp_path, key) -> None:
    """Found by test_fuzz_inputs: a key holding a newline (quoted keys can) was printed raw,
    so one problem spread over several lines of stderr. Odd keys are shown quoted, escaped."""
    import yaml

    from spotwatch.config.errors import ConfigError
    from spotwatch.config.load import load_config

    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"imds": {key: 1}, key: 2}))
    with pytest.raises(ConfigError) as raised:
        load_config(str(path), env={}, check_permissions=False)
    assert len(raised.value.problems) == 2
    for problem in raised.value.problems:
        assert "\n" not in problem and "\u202e" not in problem and len(problem) < 200
        assert problem.startswith(f"{path}: ") and "unknown key" in problem


def test_a_list_inside_a_hooks_actions_is_a_config_error(tmp_path) -> None:
    """Found by test_fuzz_inputs: `actions: [[]]` raised TypeError (unhashable list) out of
    the loader: a traceback and exit 1 instead of a key-path line and exit 78."""
    from spotwatch.config.errors import ConfigError
    from spotwatch.config.load import load_config

    path = tmp_path / "config.yaml"
    path.write_text("hooks:\n  - {name: a, command: [/bin/true], actions: [[], {x: 1}, stop]}\n")
    with pytest.raises(ConfigError) as raised:
        load_config(str(path), env={}, check_permissions=False)
    assert [p.split(": ")[1] for p in raised.value.problems] == [
        "hooks[0].actions[0]",
        "hooks[0].actions[1]",
    ]


@pytest.mark.parametrize(
    "record",
    [
        {"notice": None, "done": False, "steps": []},
        {"notice": {"action": "terminate"}, "done": False, "steps": []},
        "a string",
        "steps-null",
        "steps-garbage",
    ],
)
def test_a_damaged_response_record_does_not_stop_the_daemon(tmp_path, record) -> None:
    """Found by test_fuzz_inputs: a state file of the right version whose response record
    was damaged (no readable notice, steps null or not mappings) made Daemon.prepare() raise
    (TypeError/KeyError): the daemon could not start at all, and under Restart=always it
    would crash-loop without ever polling. Now the damaged parts are dropped with a warning;
    readable finished steps stay finished."""
    import json

    from spotwatch.commands.settings import load_service_config
    from spotwatch.daemon.shell import Daemon, DaemonParts
    from spotwatch.state.files import read_boot_id

    notice = {"action": "terminate", "time": "2030-01-01T00:00:00Z", "source": "instance-action"}
    done_step = {"name": "hook:h", "kind": "hook", "status": "ok"}
    if record == "steps-null":
        record = {"notice": notice, "done": False, "steps": None}
    elif record == "steps-garbage":
        record = {"notice": notice, "done": False, "steps": [done_step, None, {"name": 5}, {}]}
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    (state_dir / "state.json").write_text(
        json.dumps(
            {
                "version": 1,
                "boot_id": read_boot_id(),
                "instance_id": None,
                "trackers": {"spot": {"known": notice, "absent_polls": 0}},
                "responses": {"spot": record},
            }
        )
    )
    out = tmp_path / "out"
    with ImdsSimulator() as sim:
        config = tmp_path / "config.yaml"
        config.write_text(
            json.dumps(
                {
                    "state_dir": str(state_dir),
                    "imds": {"endpoint": sim.endpoint, "timeout": "300ms"},
                    "ecs": {"enabled": False},
                    "hooks": [{"name": "h", "command": f"echo ran >> {out}"}],
                }
            )
        )
        daemon = Daemon(load_service_config(str(config), env={}, with_user_data=False),
                        parts=DaemonParts())  # fmt: skip
        try:
            daemon.prepare()
            # An unfinished response is taken up once a poll shows its notice still there.
            sim.set_instance_action("terminate", notice["time"])
            assert daemon.watcher is not None
            daemon.watcher.poll_once()
            assert daemon.responder.wait(20)
        finally:
            daemon.shutdown()
    stored = json.loads((state_dir / "state.json").read_text())
    if isinstance(record, dict) and record.get("steps") and record["steps"][0] == done_step:
        # The finished hook was not run again; the response was finished.
        assert not out.exists()
        assert response_record(stored)["done"] is True


def test_a_deeply_nested_ecs_agent_answer_is_a_discovery_error() -> None:
    """Found by test_fuzz_ecs: `[[[[...` from /v1/metadata raised RecursionError out of
    discover() (json raises it, not ValueError, for deep nesting) instead of DiscoveryError."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from spotwatch.parts.ecs.agent import DiscoveryError, discover

    class Deep(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"[" * 100_000
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Deep)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(DiscoveryError):
            discover(f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()


def test_temp_files_left_by_a_kill_during_a_state_write_are_removed_at_start(tmp_path) -> None:
    """Found by test_crash (long mode): each kill -9 that landed inside write_atomically left
    its `.state.json.XXXX` temp file behind, forever; now the next start removes them."""
    from spotwatch.state.store import StateStore

    for name in (".state.json.abc123", ".poll.json.x", ".hibernate.json.keep", "other"):
        (tmp_path / name).write_text("{")
    store = StateStore(str(tmp_path))
    store.load()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".hibernate.json.keep",  # the ledger is shared with the sleep hook: not ours to clean
        "other",
        "state.json",
    ]
