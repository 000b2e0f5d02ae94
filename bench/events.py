"""Event sinks: throughput of the sender with all three sinks on, and what a slow sink costs
the others (nothing, by design: each sink has its own lane).

    python -m bench --only events

The webhook is a local HTTP receiver in this process; SNS (topic → SQS subscription) and
EventBridge (bus → rule → SQS) are moto's server in a process of its own (`MotoProcess`,
which answers one request at a time: its speed, not ours, bounds the AWS lanes).
"""

from __future__ import annotations

import time
from typing import Any, Dict, Tuple

from bench.loopback import QuietHandler, serve
from spotwatch.config.schema import Config, EventsSettings, ImdsSettings, WebhookSettings
from spotwatch.telemetry.sinks import EventSinks

REGION = "us-east-1"


class Receiver:
    """Answers every POST with 200 after `delay` seconds."""

    def __init__(self, delay: float = 0.0) -> None:
        self.count = 0
        receiver = self

        class Handler(QuietHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a real receiver would

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                time.sleep(delay)
                receiver.count += 1
                self.reply(200, b"", "text/plain")

        self.server, base = serve(Handler)
        self.url = base + "/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def aws_world() -> Tuple[str, str]:
    """A topic and a bus on the endpoint in AWS_ENDPOINT_URL (moto); (topic ARN, bus name)."""
    import boto3

    topic = boto3.client("sns", region_name=REGION).create_topic(Name="bench")["TopicArn"]
    boto3.client("events", region_name=REGION).create_event_bus(Name="bench")
    return topic, "bench"


def _config(webhook_url: str, topic: str, bus: str) -> Config:
    # IMDS that refuses at once: the instance ARN lookup fails fast, as off EC2.
    return Config(
        imds=ImdsSettings(endpoint="http://127.0.0.1:9", timeout=0.2),
        webhook=WebhookSettings(url=webhook_url),
        events=EventsSettings(sns_topic_arn=topic, eventbridge_bus=bus),
    )


def _event(n: int) -> Dict[str, Any]:
    return {"event": "step", "action": "terminate", "instance_id": "i-0bench", "step": f"s{n}"}


def run(events: int, webhook_delay: float, topic: str, bus: str) -> Dict[str, float]:
    """Send `events` through all three sinks; seconds until each lane has delivered them all
    (`queue` is the time the sending side took)."""
    receiver = Receiver(webhook_delay)
    try:
        config = _config(receiver.url, topic, bus)
        sinks = EventSinks(lambda: config)
        sinks.send(_event(-1), give_up=time.time() + 600)  # warm: clients, connections
        assert sinks.flush(60)
        began = time.monotonic()
        for n in range(events):
            sinks.send(_event(n), give_up=time.time() + 600)
        queued = time.monotonic() - began
        done: Dict[str, float] = {"queue": queued}
        while len(done) < 1 + len(sinks.lanes):  # each lane's own finishing time
            if time.monotonic() - began > 600:
                raise RuntimeError("event lanes did not finish in 600 s")
            for name, lane in sinks.lanes.items():
                if name not in done and not lane.pending():
                    done[name] = time.monotonic() - began
            time.sleep(0.002)
        for name, lane in sinks.lanes.items():
            assert lane.dropped == 0, f"{name} dropped events"
        return done
    finally:
        receiver.close()
