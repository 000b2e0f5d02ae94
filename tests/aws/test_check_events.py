"""`spotwatch check` for the event sinks: each is reached without publishing anything."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator, List

import boto3
import pytest
from awshelpers import REGION

from spotwatch.commands.check import PREFLIGHTS, run_preflight
from spotwatch.commands.check_events import check_events
from spotwatch.commands.results import ERROR, OK
from spotwatch.config.schema import Config, EventsSettings, WebhookSettings

MISSING_TOPIC = f"arn:aws:sns:{REGION}:123456789012:no-such-topic"


@pytest.fixture
def posts() -> Iterator[Any]:
    """An HTTP server that counts every request it gets."""
    seen: List[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            seen.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield server.server_address[1], seen
    finally:
        server.shutdown()
        server.server_close()


def test_check_events_is_a_preflight() -> None:
    assert check_events in PREFLIGHTS


def test_sns_topic_and_eventbridge_bus_that_exist_pass(moto: str) -> None:
    topic = boto3.client("sns", region_name=REGION).create_topic(Name="fleet")["TopicArn"]
    boto3.client("events", region_name=REGION).create_event_bus(Name="fleet")
    config = Config(events=EventsSettings(sns_topic_arn=topic, eventbridge_bus="fleet"))
    results = run_preflight(check_events, config)
    assert [(r.name, r.status) for r in results] == [
        ("events:sns", OK),
        ("events:eventbridge", OK),
    ]
    assert "GetTopicAttributes" in results[0].detail and "not tried" in results[0].detail
    assert "DescribeEventBus" in results[1].detail


def test_a_missing_topic_or_bus_fails_in_the_apis_words(moto: str) -> None:
    config = Config(events=EventsSettings(sns_topic_arn=MISSING_TOPIC, eventbridge_bus="nope"))
    results = run_preflight(check_events, config)
    assert [(r.name, r.status) for r in results] == [
        ("events:sns", ERROR),
        ("events:eventbridge", ERROR),
    ]
    assert "NotFound" in results[0].detail and "ResourceNotFound" in results[1].detail


def test_the_webhook_check_connects_but_posts_nothing(posts: Any) -> None:
    port, seen = posts
    url = f"http://127.0.0.1:{port}/services/SECRETPATH?token=SECRETQUERY"
    (result,) = run_preflight(check_events, Config(webhook=WebhookSettings(url=url)))
    assert result.status == OK and "nothing posted" in result.detail
    assert "SECRET" not in result.detail
    assert seen == []


def test_an_unreachable_webhook_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = Config(webhook=WebhookSettings(url=f"http://127.0.0.1:{port}/x"))
    (result,) = run_preflight(check_events, config)
    assert result.status == ERROR and "cannot connect" in result.detail
