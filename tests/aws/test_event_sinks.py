"""events.sns_topic_arn and events.eventbridge_bus against moto's server over real HTTP:
a topic with an SQS subscription, a bus with a rule sending to SQS; the queues show what
arrived, and in which order. A scripted endpoint stands in where moto cannot refuse an
entry (FailedEntryCount)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, Iterator, List

import boto3
import pytest
import yaml
from awshelpers import REGION, ScriptedEndpoint
from testkit import child_env

from spotwatch.config.schema import Config, EventsSettings, ImdsSettings, WebhookSettings
from spotwatch.simulator.imds import ImdsSimulator
from spotwatch.telemetry.sinks import EventSinks


@pytest.fixture
def imds() -> Iterator[ImdsSimulator]:
    with ImdsSimulator() as simulator:
        yield simulator


class SlowWebhook:
    """An HTTP receiver that takes `delay` s per request and answers 500 to the first `fail`."""

    def __init__(self, fail: int, delay: float) -> None:
        self.requests = 0
        self.events: List[Dict[str, Any]] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                time.sleep(delay)
                hook.requests += 1
                ok = hook.requests > fail
                if ok:
                    hook.events.append(json.loads(body))
                self.send_response(200 if ok else 500)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def slow_webhook() -> Iterator[SlowWebhook]:
    hook = SlowWebhook(fail=3, delay=0.5)
    try:
        yield hook
    finally:
        hook.close()


def _queue(sqs: Any, name: str) -> Dict[str, str]:
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]
    return {"url": url, "arn": arn["QueueArn"]}


@pytest.fixture
def fleet(moto: str) -> Dict[str, Any]:
    """An SNS topic → SQS queue, and an EventBridge bus → rule (source spotwatch) → SQS."""
    sqs = boto3.client("sqs", region_name=REGION)
    sns = boto3.client("sns", region_name=REGION)
    events = boto3.client("events", region_name=REGION)
    topic_queue, bus_queue = _queue(sqs, "from-sns"), _queue(sqs, "from-eventbridge")
    topic = sns.create_topic(Name="spot-fleet")["TopicArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=topic_queue["arn"])
    bus = events.create_event_bus(Name="fleet")["EventBusArn"]
    events.put_rule(
        Name="spot-notices",
        EventBusName="fleet",
        EventPattern=json.dumps({"source": ["spotwatch"]}),
    )
    events.put_targets(
        Rule="spot-notices", EventBusName="fleet", Targets=[{"Id": "q", "Arn": bus_queue["arn"]}]
    )
    return {
        "sqs": sqs,
        "topic": topic,
        "bus": bus,
        "topic_queue": topic_queue,
        "bus_queue": bus_queue,
    }


def _drain(sqs: Any, queue: Dict[str, str], count: int, timeout: float = 20.0) -> List[Any]:
    bodies: List[Any] = []
    end = time.monotonic() + timeout
    while len(bodies) < count and time.monotonic() < end:
        answer = sqs.receive_message(
            QueueUrl=queue["url"], MaxNumberOfMessages=10, WaitTimeSeconds=1
        )
        bodies += [json.loads(m["Body"]) for m in answer.get("Messages", [])]
    return bodies


def _config(tmp_path: Path, imds: ImdsSimulator, hook: Path, **sections: Any) -> Path:
    hook.write_text("#!/bin/sh\nexit 0\n")
    hook.chmod(0o755)
    config = {
        "poll_interval": "200ms",
        "deadline_margin": "1s",
        "state_dir": str(tmp_path / "state"),
        "imds": {"endpoint": imds.endpoint, "timeout": "300ms", "user_data": False},
        "ecs": {"enabled": False},
        "hooks": [
            {"name": "a", "command": [str(hook)]},
            {"name": "b", "command": [str(hook)], "order": 1},
        ],
        **sections,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


EXPECTED = [("notice", None), ("step", "hook:a"), ("step", "hook:b"), ("complete", None)]


def test_sns_and_eventbridge_receive_every_event_in_sequence(
    fleet: Dict[str, Any], imds: ImdsSimulator, tmp_path: Path
) -> None:
    """`run --once` on a notice: both queues get notice, the steps and complete, in order,
    with SNS attributes to filter on and EventBridge's source, type and instance ARN."""
    config = _config(
        tmp_path,
        imds,
        tmp_path / "hook.sh",
        events={"sns_topic_arn": fleet["topic"], "eventbridge_bus": fleet["bus"]},
    )
    imds.raise_notice("terminate", 60)
    result = subprocess.run(
        [sys.executable, "-m", "spotwatch", "run", "--once", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=90,
        env=child_env(),
    )
    assert result.returncode == 0, result.stderr
    assert "not delivered" not in result.stderr, result.stderr

    envelopes = _drain(fleet["sqs"], fleet["topic_queue"], 4)
    from_sns = sorted((json.loads(e["Message"]) for e in envelopes), key=lambda e: e["sequence"])
    assert [(e["event"], e["step"]) for e in from_sns] == EXPECTED
    assert [e["sequence"] for e in from_sns] == [1, 2, 3, 4]
    attributes = envelopes[0]["MessageAttributes"]
    assert attributes["action"] == {"Type": "String", "Value": "terminate"}
    assert attributes["event"]["Type"] == "String"

    from_bus = sorted(
        _drain(fleet["sqs"], fleet["bus_queue"], 4), key=lambda e: e["detail"]["sequence"]
    )
    assert [(e["detail-type"], e["detail"]["step"]) for e in from_bus] == EXPECTED
    assert {e["source"] for e in from_bus} == {"spotwatch"}
    instance_arn = f"arn:aws:ec2:{imds.region}:123456789012:instance/{imds.instance_id}"
    assert {tuple(e["resources"]) for e in from_bus} == {(instance_arn,)}
    assert from_bus[0]["detail"]["instance_id"] == imds.instance_id


def test_a_partly_failed_put_events_is_retried_and_order_kept(
    scripted: ScriptedEndpoint, aws_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FailedEntryCount 1 is a failure: the entry is sent again before the next event."""
    aws_env(None)
    monkeypatch.setenv("AWS_ENDPOINT_URL_EVENTBRIDGE", scripted.url)
    refused = {
        "FailedEntryCount": 1,
        "Entries": [{"ErrorCode": "ThrottlingException", "ErrorMessage": "slow down"}],
    }
    accepted = {"FailedEntryCount": 0, "Entries": [{"EventId": "1"}]}
    scripted.script["PutEvents"] = [(200, refused), (200, accepted)]
    config = Config(
        imds=ImdsSettings(endpoint="http://127.0.0.1:9", timeout=0.2),
        events=EventsSettings(eventbridge_bus="fleet"),
        webhook=WebhookSettings(retries=2),
    )
    sinks = EventSinks(lambda: config, backoff_base=0.01)
    for kind in ("notice", "step", "complete"):
        sinks.send({"event": kind, "instance_id": None}, give_up=time.time() + 60)
    assert sinks.flush(30)
    sent = [json.loads(call["Entries"][0]["Detail"])["event"] for op, call in scripted.calls]
    assert sent == ["notice", "notice", "step", "complete"]
    assert sinks.delivered["eventbridge"] == 3 and sinks.dropped["eventbridge"] == 0
    assert scripted.calls[0][1]["Entries"][0]["EventBusName"] == "fleet"


def test_a_failing_sink_is_retried_without_delaying_the_others(
    fleet: Dict[str, Any], slow_webhook: SlowWebhook
) -> None:
    """A webhook that answers 500 slowly is still being retried when SNS has every event."""
    webhook = slow_webhook
    config = Config(
        webhook=WebhookSettings(url=webhook.url, retries=5),
        events=EventsSettings(sns_topic_arn=fleet["topic"]),
    )
    sinks = EventSinks(lambda: config, backoff_base=0.2)
    began = time.monotonic()
    for kind in ("notice", "step", "complete"):
        sinks.send({"event": kind, "action": "terminate"}, give_up=time.time() + 60)
    assert sinks.lanes["sns"].flush(10)
    sns_done = time.monotonic() - began
    assert webhook.requests < 4 + 2  # the webhook is still retrying its first events
    assert sinks.flush(30)
    assert [e["event"] for e in webhook.events] == ["notice", "step", "complete"]
    from_sns = _drain(fleet["sqs"], fleet["topic_queue"], 3)
    assert sorted(json.loads(e["Message"])["sequence"] for e in from_sns) == [1, 2, 3]
    assert sns_done < 3 * 0.5, f"SNS took {sns_done:.2f} s: the webhook's trouble held it up"
