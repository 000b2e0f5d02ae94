"""Every configured event sink, fed from one place: `EventSinks.send`.

An event is numbered once (`sequence`, the same in every sink, so a subscriber can line up
what the webhook, SNS and EventBridge received) and handed to each configured sink's lane
(`delivery.Lane`: its own queue and thread). Which sinks are configured is read from the
current config at each event, so a reload that adds or removes one takes effect for the
next event; a lane's thread starts with its first event, so an unconfigured sink costs
nothing.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Dict, List, Optional

from spotwatch.config.schema import Config
from spotwatch.telemetry.aws_sinks import EventBridgeSink, SnsSink
from spotwatch.telemetry.delivery import BACKOFF_BASE, Lane, Sink, flush
from spotwatch.telemetry.webhook import Post, WebhookSink


def any_sink_configured(config: Config) -> bool:
    return bool(config.webhook.url or config.events.sns_topic_arn or config.events.eventbridge_bus)


class EventSinks:
    def __init__(
        self,
        config: Callable[[], Config],
        *,
        backoff_base: float = BACKOFF_BASE,
        post: Optional[Post] = None,
        sinks: Optional[List[Sink]] = None,
    ) -> None:
        self._config = config
        if sinks is None:
            sinks = [
                WebhookSink(lambda: config().webhook, post=post),
                SnsSink(config),
                EventBridgeSink(config),
            ]
        self.lanes: Dict[str, Lane] = {
            sink.name: Lane(sink, backoff_base=backoff_base) for sink in sinks
        }
        self._lock = threading.Lock()
        self._sequence = 0

    def configured(self) -> bool:
        return any(lane.sink.configured() for lane in self.lanes.values())

    def send(self, event: Dict[str, Any], give_up: float) -> None:
        """Queue an event for every configured sink (never blocks)."""
        targets = [lane for lane in self.lanes.values() if lane.sink.configured()]
        if not targets:
            return
        with self._lock:  # numbered and queued together: each lane gets them in order
            self._sequence += 1
            event = {**event, "sequence": self._sequence}
            for lane in targets:
                lane.put(event, give_up)

    def flush(self, timeout: float) -> bool:
        """Wait (bounded) until every lane delivered or gave up what it was given."""
        return flush(list(self.lanes.values()), timeout)

    def finish(self, timeout: float) -> bool:
        """The process is about to exit: `timeout` in all for what is undelivered, and no
        more at the interpreter's exit."""
        delivered = self.flush(timeout)
        for lane in self.lanes.values():
            lane.finished = True
        return delivered

    @property
    def delivered(self) -> Dict[str, int]:
        return {name: lane.delivered for name, lane in self.lanes.items()}

    @property
    def dropped(self) -> Dict[str, int]:
        return {name: lane.dropped for name, lane in self.lanes.items()}
