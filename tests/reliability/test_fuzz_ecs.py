"""ECS agent introspection answers, fuzzed: `discover` returns an AgentInfo and
`tasks_on_instance` a list of tasks, or they raise DiscoveryError, never anything else,
whatever `/v1/metadata` and `/v1/tasks` say."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator, Tuple

import pytest
from hypothesis import given
from hypothesis import strategies as st
from relsupport import record_stats, suite_settings

ecs = pytest.importorskip("spotwatch.parts.ecs.agent")

JSONISH = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20)),
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=12,
)
ARNS = st.one_of(
    st.sampled_from(
        [
            "arn:aws:ecs:us-east-1:123456789012:container-instance/c/0123",
            "arn:aws:ecs::123:container-instance/x",
            "arn:aws",
            "",
            "/",
        ]
    ),
    JSONISH,
)
BODIES = st.one_of(
    st.builds(
        lambda cluster, arn, extra: json.dumps(
            {"Cluster": cluster, "ContainerInstanceArn": arn, **extra}
        ).encode(),
        st.one_of(st.just("prod"), JSONISH),
        ARNS,
        st.dictionaries(st.text(max_size=8), JSONISH, max_size=2),
    ),
    JSONISH.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=80),
    st.just(b"[" * 100_000),
    st.just(b'{"Cluster": "c", "ContainerInstanceArn": ' + b"[" * 50_000 + b"}"),
)


TASKS = st.one_of(
    st.builds(
        lambda tasks: json.dumps({"Tasks": tasks}).encode(),
        st.lists(
            st.one_of(
                st.fixed_dictionaries(
                    {
                        "Arn": st.one_of(st.just("arn:aws:ecs:us-east-1:1:task/c/t"), JSONISH),
                        "KnownStatus": st.one_of(st.sampled_from(["RUNNING", "STOPPED"]), JSONISH),
                        "Containers": st.one_of(
                            st.lists(
                                st.one_of(
                                    st.fixed_dictionaries(
                                        {"DockerId": JSONISH, "Name": JSONISH},
                                        optional={"RestartCount": JSONISH},
                                    ),
                                    JSONISH,
                                ),
                                max_size=3,
                            ),
                            JSONISH,
                        ),
                    }
                ),
                JSONISH,
            ),
            max_size=4,
        ),
    ),
    BODIES,
)


class Agent(BaseHTTPRequestHandler):
    answer: Tuple[int, bytes] = (200, b"{}")

    def do_GET(self) -> None:
        status, body = type(self).answer
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def agent() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Agent)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@suite_settings(ci_examples=100, long_examples=5000)
@given(status=st.sampled_from([200, 200, 200, 404, 500, 302]), body=BODIES)
def test_agent_metadata(agent: str, status: int, body: bytes) -> None:
    Agent.answer = (status, body)
    try:
        info = ecs.discover(agent, timeout=1.0)
    except ecs.DiscoveryError as error:
        assert "\n" not in str(error) and len(str(error)) < 300
    else:
        assert info.cluster and info.container_instance_arn
        str(info)
        assert info.region is None or isinstance(info.region, str)
    record_stats("ecs-agent", examples=1)


@suite_settings(ci_examples=100, long_examples=5000)
@given(status=st.sampled_from([200, 200, 200, 404, 500]), body=TASKS)
def test_agent_tasks(agent: str, status: int, body: bytes) -> None:
    Agent.answer = (status, body)
    try:
        tasks = ecs.tasks_on_instance(agent, timeout=1.0)
    except ecs.DiscoveryError as error:
        assert "\n" not in str(error) and len(str(error)) < 300
    else:
        for task in tasks:
            assert isinstance(task.arn, str)
            assert all(isinstance(c.docker_id, str) for c in task.containers)
    record_stats("ecs-agent", examples=1)
