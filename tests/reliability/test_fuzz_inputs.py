"""Every input surface, fuzzed: nothing the world throws at spotwatch ends in a traceback.

- the config file (random YAML structure and values, under known and unknown keys, and
  random text): a `Config`, or a `ConfigError` whose every line names its file and key path
  (the CLI turns it into exit 78);
- user data (random bytes, truncated gzip, broken MIME, YAML that is not a mapping): a
  section or None, described in one line that never repeats the user data;
- IMDS answers: random statuses and bodies through the simulator into the real client and
  monitors, and random raw bytes as the whole HTTP answer into the client's own reader;
- the state file: random bytes and random JSON (of the right version and boot) into
  `StateStore.load` and `Daemon.prepare`, then a poll that handles a notice.

ECS agent introspection JSON is fuzzed in test_fuzz_ecs.py once `spotwatch.parts.ecs.steps`
exists (it is skipped until then).
"""

from __future__ import annotations

import gzip
import json
import socket
import tempfile
import threading
import time
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest
import yaml
from hypothesis import example, given, note
from hypothesis import strategies as st
from relsupport import (
    Captured,
    ErrorRecords,
    append_hook,
    base_config,
    lines,
    record_stats,
    suite_settings,
    write_config,
)

from spotwatch.cli import main as cli_main
from spotwatch.clouds.aws.imds import ImdsClient, ImdsError
from spotwatch.clouds.aws.monitors import RebalanceMonitor, SpotMonitor
from spotwatch.commands.settings import load_service_config
from spotwatch.commands.status import collect, render
from spotwatch.config.errors import ConfigError
from spotwatch.config.load import load_config, load_config_report
from spotwatch.config.schema import Config
from spotwatch.config.userdata import extract_spotwatch_section
from spotwatch.daemon.shell import Daemon, DaemonParts
from spotwatch.detection.notices import NOTICE_ACTIONS
from spotwatch.simulator.imds import (
    INSTANCE_ACTION_PATH,
    REBALANCE_PATH,
    TERMINATION_TIME_PATH,
    ImdsSimulator,
)
from spotwatch.state.files import read_boot_id
from spotwatch.state.store import StateStore

# --------------------------------------------------------------------- config files

KNOWN_KEYS = [
    "poll_interval", "deadline_margin", "dry_run", "state_dir", "imds", "endpoint", "timeout",
    "token_ttl", "allow_imdsv1", "user_data", "rebalance", "enabled", "hooks", "name",
    "command", "actions", "order", "user", "env", "ecs", "agent_url", "region", "drain",
    "stop", "final_stop", "stop_timeout", "stop_reason", "stop_via", "docker_host", "instance",
    "after_response",
    "after_rebalance", "hibernate", "trigger", "budget", "log", "level", "format", "metrics",
    "textfile", "listen", "webhook", "url", "headers", "retries",
]  # fmt: skip
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(
        ["5s", "500ms", "2m", "6h", "0s", "-1s", "1e400", "nan", "inf", "terminate", "stop",
         "rebalance", "resume", "auto", "none", "all", "http://127.0.0.1:1", "/tmp/x", "root",
         "0", "65536", "{action}", "{nope}", "x" * 200, "\x00", "\u202e", "yes", "no"]
    ),
)  # fmt: skip
KEYS = st.one_of(st.sampled_from(KNOWN_KEYS), st.text(max_size=12), st.integers(), st.booleans())
VALUES = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(KEYS, children, max_size=5)
    ),
    max_leaves=25,
)


TOP_KEYS = [*KNOWN_KEYS[:4], "imds", "hooks", "ecs", "hibernate", "log", "metrics", "webhook",
            "instance", "rebalance"]  # fmt: skip


@st.composite
def config_documents(draw: st.DrawFn) -> Any:
    """Mostly mappings shaped like a config (known sections with random contents), sometimes
    anything at all."""
    if draw(st.integers(0, 9)) == 0:
        return draw(VALUES)
    document: Dict[Any, Any] = {}
    for key in draw(st.lists(st.sampled_from(TOP_KEYS), max_size=6)):
        if key == "hooks":
            document[key] = draw(
                st.one_of(
                    VALUES,
                    st.lists(
                        st.dictionaries(st.sampled_from(KNOWN_KEYS[13:20]), VALUES, max_size=7),
                        max_size=3,
                    ),
                )
            )
        else:
            document[key] = draw(
                st.one_of(VALUES, st.dictionaries(st.sampled_from(KNOWN_KEYS), VALUES, max_size=5))
            )
    if draw(st.booleans()):
        document[draw(st.text(max_size=10))] = draw(VALUES)
    return document


def check_problems(error: ConfigError, path: str) -> None:
    assert error.problems, "a ConfigError with no problem"
    for problem in error.problems:
        assert "\n" not in problem, problem
        assert problem.startswith(path + ": "), problem
        assert len(problem) < 600, problem
        rest = problem[len(path) + 2 :]
        assert rest.strip() and "Traceback" not in rest


@pytest.fixture(scope="module")
def folder() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="spotwatch-fuzz-") as name:
        yield Path(name)


@suite_settings(ci_examples=150, long_examples=10000)
@given(document=config_documents())
def test_config_file_structure(folder: Path, document: Any) -> None:
    path = folder / "config.yaml"
    try:
        text = yaml.safe_dump(document, allow_unicode=True)
    except yaml.YAMLError:
        return
    path.write_text(text, encoding="utf-8")
    record_stats("config-structure", examples=1)
    try:
        config = load_config(str(path), env={}, check_permissions=False)
    except ConfigError as error:
        check_problems(error, str(path))
        record_stats("config-structure", rejected=1)
        return
    assert isinstance(config, Config)
    assert 0 < config.poll_interval < float("inf")
    assert config.deadline_margin >= 0 and config.imds.timeout > 0
    assert 1 <= config.imds.token_ttl <= 21600
    for hook in config.hooks:
        assert (
            hook.timeout > 0
            and hook.argv()
            and set(hook.actions) <= {"terminate", "stop", "hibernate", "rebalance", "resume"}
        )


@suite_settings(ci_examples=150, long_examples=10000)
@given(
    text=st.one_of(
        st.text(max_size=200), st.binary(max_size=200).map(lambda b: b.decode("latin-1"))
    )
)
def test_config_file_text(folder: Path, text: str) -> None:
    """Any text at all (YAML syntax errors, tabs, anchors, tags, control characters)."""
    path = folder / "config.yaml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        load_config(str(path), env={}, check_permissions=False)
    except ConfigError as error:
        check_problems(error, str(path))


@suite_settings(ci_examples=40, long_examples=1000)
@given(data=st.binary(max_size=120), env_value=st.text(max_size=20))
def test_config_bytes_and_environment(folder: Path, data: bytes, env_value: str) -> None:
    """Non-UTF-8 files and any value of the environment variables: a clear error or fine."""
    path = folder / "bytes.yaml"
    path.write_bytes(data)
    env = {
        "SPOTWATCH_POLL_INTERVAL": env_value,
        "SPOTWATCH_DRY_RUN": env_value,
        "SPOTWATCH_LOG_LEVEL": env_value,
        "AWS_EC2_METADATA_SERVICE_ENDPOINT": env_value,
    }
    try:
        load_config(str(path), env=env, check_permissions=False)
    except ConfigError as error:
        assert error.problems
        assert all("\n" not in p and p.split(":", 1)[0] for p in error.problems)


def test_a_bad_config_is_exit_78_with_key_path_lines(tmp_path: Path, capsys) -> None:
    """What the operator sees: one line per problem naming the key path; exit 78."""
    path = tmp_path / "config.yaml"
    path.write_text(
        "poll_interval: soon\nimds: {timeout: []}\nhooks:\n  - {name: 'a b', command: []}\n"
        "surprise: 1\n"
    )
    for command in (["run", "--once"], ["check"]):
        assert cli_main([*command, "-c", str(path)]) == 78
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) >= 5, err
        joined = "\n".join(err)
        for key in ("poll_interval", "imds.timeout", "hooks[0].name", "hooks[0].command",
                    "surprise"):  # fmt: skip
            assert key in joined
        assert "Traceback" not in joined


# --------------------------------------------------------------------- user data

SECRET = "s3cr3t-do-not-log"
SECTIONS = st.one_of(
    st.just("spotwatch:\n  poll_interval: 2s\n"),
    st.just(f"spotwatch:\n  webhook: {{url: 'http://x/{SECRET}', headers: {{A: {SECRET}}}}}\n"),
    st.just(f"spotwatch: [{SECRET}]\n"),
    st.just("spotwatch:\n  poll_interval: [1, 2]\n  hooks: 5\n"),
    st.just("- a\n- b\n"),
    st.just("just a string\n"),
    st.just("spotwatch: {poll_interval: 1s\n"),  # broken YAML
    VALUES.map(lambda v: yaml.safe_dump({"spotwatch": v})),
    VALUES.map(lambda v: yaml.safe_dump(v)),
    st.text(max_size=80),
)


@st.composite
def user_data(draw: st.DrawFn) -> bytes:
    kind = draw(
        st.sampled_from(["raw", "cloud", "spot", "gzip", "truncated-gzip", "mime", "broken-mime"])
    )
    body = draw(SECTIONS) + f"# {SECRET}\n"
    cloud = ("#cloud-config\n" + body).encode("utf-8", "surrogatepass")
    spot = ("#spotwatch-config\n" + body).encode("utf-8", "surrogatepass")
    if kind == "raw":
        return draw(st.binary(max_size=300))
    if kind == "cloud":
        return cloud
    if kind == "spot":
        return spot
    inner = draw(st.sampled_from([cloud, spot]))
    if kind == "gzip":
        return gzip.compress(inner)
    if kind == "truncated-gzip":
        packed = gzip.compress(inner)
        return packed[: draw(st.integers(0, max(0, len(packed) - 1)))]
    archive = MIMEMultipart(boundary=draw(st.sampled_from(["==X==", "b", "--", "=="])))
    for _ in range(draw(st.integers(0, 3))):
        subtype = draw(st.sampled_from(["cloud-config", "x-shellscript", "plain", "x-spotwatch"]))
        payload = draw(st.sampled_from([cloud, spot, b"#!/bin/sh\necho hi\n"]))
        part = MIMEText(payload.decode("utf-8", "replace"), subtype)
        archive.attach(part)
    data = archive.as_bytes()
    if kind == "broken-mime":
        cut = draw(st.integers(0, len(data)))
        junk = draw(st.binary(max_size=40))
        data = data[:cut] + junk + data[cut + len(junk) :]
    return data


@suite_settings(ci_examples=150, long_examples=10000)
@given(raw=user_data())
def test_user_data_never_raises_and_is_never_echoed(folder: Path, raw: bytes) -> None:
    record_stats("user-data", examples=1)
    section, description = extract_spotwatch_section(raw)
    assert section is None or isinstance(section, dict)
    assert isinstance(description, str) and "\n" not in description and len(description) < 300
    assert SECRET not in description
    # Through the whole loader: a bad section is reported and ignored, never raised.
    path = folder / "empty.yaml"
    path.write_text("poll_interval: 7s\n")
    report = load_config_report(str(path), env={}, user_data=raw, check_permissions=False)
    if report.user_data_problems:
        assert report.config.poll_interval == 7.0  # the file config stays in force
        record_stats("user-data", rejected=1)
    for problem in report.user_data_problems:
        assert problem.startswith("user-data: ") and "\n" not in problem
        assert len(problem) < 400
    assert SECRET not in report.user_data_note


def test_user_data_is_never_logged_whole(tmp_path: Path) -> None:
    """The service path: user data fetched from IMDS with a bad section holding a secret; the
    log names the problem, not the content."""
    secret_section = (
        f"#cloud-config\nrunonce: {SECRET}-1\nspotwatch:\n  hooks: {SECRET}-2\n"
        f"  webhook: {{url: 'http://example.com/{SECRET}-3'}}\n"
    ).encode()
    with ImdsSimulator() as sim:
        sim.set_user_data(secret_section)
        path = write_config(
            tmp_path / "config.yaml",
            {"imds": {"endpoint": sim.endpoint, "timeout": "300ms"}},
        )
        with Captured() as log:
            config = load_service_config(str(path), env={})
    assert config.hooks == ()
    text = log.text()
    assert "hooks" in text  # the problem is named
    assert f"{SECRET}-1" not in text and f"{SECRET}-3" not in text


# --------------------------------------------------------------------- IMDS answers

STATUSES = st.sampled_from([200, 200, 200, 404, 401, 403, 429, 500, 503, 301, 204, 418])
BODIES = st.one_of(
    st.binary(max_size=100),
    st.builds(
        lambda a, t: json.dumps({"action": a, "time": t}).encode(),
        st.one_of(st.sampled_from(NOTICE_ACTIONS), st.text(max_size=8), st.integers()),
        st.one_of(
            st.sampled_from(["2030-01-01T00:00:00Z", "2030-13-01T00:00:00Z", "0000-00-00T00:00:00Z",
                             "9999-12-31T23:59:59.999999999Z", "2030-01-01T00:00:00+00:00",
                             "2030-01-01T00:00:00+01:00", " 2030-01-01T00:00:00Z\n"]),
            st.text(max_size=30),
            st.floats(),
        ),
    ),
    st.builds(lambda v: json.dumps({"noticeTime": v}).encode(), VALUES),
    VALUES.map(lambda v: json.dumps(v).encode()),
)  # fmt: skip


@pytest.fixture(scope="module")
def shared_sim() -> Iterator[ImdsSimulator]:
    with ImdsSimulator() as simulator:
        yield simulator


@suite_settings(ci_examples=100, long_examples=3000)
@given(
    answers=st.lists(st.tuples(st.sampled_from([INSTANCE_ACTION_PATH, TERMINATION_TIME_PATH,
                                                REBALANCE_PATH]), STATUSES, BODIES), max_size=3),
)  # fmt: skip
def test_imds_bodies_through_client_and_monitors(shared_sim: ImdsSimulator, answers) -> None:
    sim = shared_sim
    for path in (INSTANCE_ACTION_PATH, TERMINATION_TIME_PATH, REBALANCE_PATH):
        sim.clear_path(path)
    for path, status, body in answers:
        sim.set_path(path, status, body)
    client = ImdsClient(sim.endpoint, timeout=0.2)
    try:
        with ErrorRecords() as errors:
            for monitor in (SpotMonitor(client), RebalanceMonitor(client)):
                reading = monitor.check(time.monotonic() + 0.3)
                if reading.notice is not None:
                    assert reading.ok
                    assert reading.notice.time.tzinfo is not None
                    assert reading.notice.action in (*NOTICE_ACTIONS, "rebalance")
        assert not errors.records, errors.texts()
    finally:
        client.close()
    record_stats("imds-bodies", examples=1)


class RawServer:
    """Answers every connection with the same raw bytes (then closes, or keeps it open)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.answer = b""
        self.close_after = True
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                conn.settimeout(0.5)
                conn.recv(4096)
                conn.sendall(self.answer)
                if not self.close_after:
                    time.sleep(0.15)
            except OSError:
                pass
            finally:
                conn.close()

    def close(self) -> None:
        self.sock.close()


RAW_HEADS = st.sampled_from(
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 99999999\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.0 200 OK\r\n\r\n",
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 99999999999999999999 X\r\n\r\n",
        b"HTTP/2 200\r\n\r\n",
        b"ICY 200 OK\r\n\r\n",
        b"",
    ]
)


@pytest.fixture(scope="module")
def raw_server() -> Iterator[RawServer]:
    server = RawServer()
    yield server
    server.close()


@suite_settings(ci_examples=80, long_examples=2000)
@given(head=RAW_HEADS, tail=st.binary(max_size=200), keep=st.booleans())
def test_raw_http_answers_into_the_clients_reader(
    raw_server: RawServer, head: bytes, tail: bytes, keep: bool
) -> None:
    """Whatever bytes come back, the client returns a Reply or raises ImdsError, in time."""
    raw_server.answer = head + tail
    raw_server.close_after = not keep
    client = ImdsClient(f"http://127.0.0.1:{raw_server.port}", timeout=0.05, allow_imdsv1=True)
    started = time.monotonic()
    try:
        client.get("meta-data/spot/instance-action", deadline=started + 0.12)
    except ImdsError:
        pass
    finally:
        client.close()
    assert time.monotonic() - started < 1.0
    record_stats("raw-http", examples=1)


# --------------------------------------------------------------------- the state file

STEP = st.one_of(
    VALUES,
    st.fixed_dictionaries(
        {"name": st.one_of(st.sampled_from(["hook:h", "hook:other"]), VALUES),
         "status": st.one_of(st.sampled_from(["pending", "running", "ok", "failed", "timeout",
                                              "skipped", "interrupted"]), VALUES)},
        optional={"kind": VALUES, "started": VALUES, "ended": VALUES, "detail": VALUES},
    ),
)  # fmt: skip
NOTICE_JSON = st.one_of(
    VALUES,
    st.fixed_dictionaries(
        {"action": st.one_of(st.sampled_from([*NOTICE_ACTIONS, "rebalance"]), VALUES),
         "time": st.one_of(st.sampled_from(["2030-01-01T00:00:00Z", "2000-01-01T00:00:00Z"]),
                           VALUES),
         "source": st.one_of(st.just("instance-action"), VALUES)}
    ),
)  # fmt: skip
RESPONSE = st.one_of(
    VALUES,
    st.fixed_dictionaries(
        {"notice": NOTICE_JSON, "done": st.one_of(st.booleans(), VALUES),
         "steps": st.one_of(st.lists(STEP, max_size=3), VALUES)},
        optional={"deadline": VALUES, "first_seen": VALUES},
    ),
)  # fmt: skip
TRACKER = st.one_of(
    VALUES,
    st.fixed_dictionaries({"known": st.one_of(st.none(), NOTICE_JSON), "absent_polls": VALUES}),
)


MONITORS = st.sampled_from(["spot", "rebalance", "resume", "x"])


@st.composite
def state_files(draw: st.DrawFn) -> bytes:
    if draw(st.integers(0, 5)) == 0:
        return draw(st.binary(max_size=200))
    data: Dict[str, Any] = {
        "version": draw(st.sampled_from([1, 1, 1, 2, "1", None])),
        "boot_id": read_boot_id(),
        "instance_id": draw(st.one_of(st.none(), st.just("i-0123456789abcdef0"), VALUES)),
        "trackers": draw(st.one_of(st.dictionaries(MONITORS, TRACKER, max_size=2), VALUES)),
        "responses": draw(st.one_of(st.dictionaries(MONITORS, RESPONSE, max_size=2), VALUES)),
    }
    if draw(st.booleans()):
        data["resume_generation"] = draw(VALUES)
    if draw(st.booleans()):
        # Plausible: a known notice with an unfinished response whose records are fuzzed, so
        # the restart path (continue the response, skip finished steps) meets them.
        action = draw(st.sampled_from(NOTICE_ACTIONS))
        notice = {"action": action, "time": "2030-01-01T00:00:00Z", "source": "instance-action"}
        data["version"] = 1
        data["trackers"] = {"spot": {"known": notice, "absent_polls": draw(VALUES)}}
        response = {"notice": notice, "done": False, "steps": draw(st.lists(STEP, max_size=4))}
        for key in draw(st.lists(st.sampled_from(["notice", "done", "steps", "deadline"]))):
            response[key] = draw(VALUES)
        data["responses"] = {"spot": response}
    return json.dumps(data).encode()


FAR_NOTICE = {"action": "terminate", "time": "2030-01-01T00:00:00Z", "source": "instance-action"}
# Found in CI: a response record of this boot, not done, under a key no tracker's response is
# given (and with no `tracker`): nothing took it up, and the response the poll started joined
# it and waited for it for good.
ORPHAN_RECORD = json.dumps(
    {
        "version": 1,
        "boot_id": read_boot_id(),
        "instance_id": None,
        "trackers": {"spot": {"known": FAR_NOTICE, "absent_polls": None}},
        "responses": {"spot": {"notice": FAR_NOTICE, "done": False, "steps": []}},
    }
).encode()


@suite_settings(ci_examples=80, long_examples=3000)
@given(content=state_files(), notice=st.booleans())
@example(content=ORPHAN_RECORD, notice=True)
def test_state_file_into_load_and_prepare(
    shared_sim: ImdsSimulator, content: bytes, notice: bool
) -> None:
    """Whatever state.json holds, the daemon starts, polls and handles a notice."""
    sim = shared_sim
    for path in (INSTANCE_ACTION_PATH, TERMINATION_TIME_PATH, REBALANCE_PATH):
        sim.clear_path(path)
    sim.clear_instance_action()
    if notice:
        sim.set_instance_action("terminate")
    with tempfile.TemporaryDirectory(prefix="spotwatch-state-fuzz-") as name:
        folder = Path(name)
        state_dir = folder / "state"
        state_dir.mkdir()
        (state_dir / "state.json").write_bytes(content)
        note(content.decode("utf-8", "replace"))
        out = folder / "out"
        config = write_config(
            folder / "config.yaml",
            base_config(state_dir, sim.endpoint, [append_hook("h", out, ["terminate", "stop"])]),
        )
        loaded = load_service_config(str(config), env={}, with_user_data=False)
        with ErrorRecords() as errors:
            daemon = Daemon(loaded, parts=DaemonParts())
            try:
                daemon.prepare()
                assert daemon.responder.wait(20)
                assert daemon.watcher is not None
                # A generous poll budget: the CI host may be loaded, and a poll cut short by
                # time is not what this test is about.
                report = daemon.watcher.poll_once(deadline=time.monotonic() + 3.0)
                assert daemon.responder.wait(20)
            finally:
                daemon.shutdown()
        assert not errors.records, errors.texts()
        assert report.ok
        # The state file is whole JSON of this version again.
        stored = json.loads((state_dir / "state.json").read_text())
        assert stored["version"] == 1 and isinstance(stored["responses"], dict)
        if notice:
            assert report.notice is not None
        record_stats("state-file", examples=1, handled=len(lines(out)))


def test_state_store_sets_aside_garbage(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_bytes(b"\x00{garbage")
    store = StateStore(str(tmp_path))
    store.load()
    assert [p.name for p in tmp_path.iterdir() if ".corrupt-" in p.name]
    assert json.loads((tmp_path / "state.json").read_text())["version"] == 1


@suite_settings(ci_examples=100, long_examples=5000)
@given(
    content=state_files(),
    poll=st.one_of(
        st.binary(max_size=50),
        st.fixed_dictionaries({"time": VALUES, "result": VALUES, "last_success": VALUES}).map(
            lambda d: json.dumps(d).encode()
        ),
    ),
)
def test_status_reads_any_state(folder: Path, content: bytes, poll: bytes) -> None:
    """`spotwatch status` (text and JSON) on whatever the state folder holds: no traceback."""
    state_dir = folder / "status-state"
    state_dir.mkdir(exist_ok=True)
    (state_dir / "state.json").write_bytes(content)
    (state_dir / "poll.json").write_bytes(poll)
    doc = collect(str(state_dir))
    if doc is not None:
        assert isinstance(render(doc), str)
        json.dumps(doc)
