"""Metrics and events: a listener of every response, and of every poll.

Always attached, cheap when nothing is configured: counters are kept in memory (a few
dictionary updates per poll), the textfile is written only when `metrics.textfile` is set,
an event sink's thread starts only with its first event (`sinks`: webhook, SNS, EventBridge).
The textfile path and the sink settings are read from the daemon's config each time, so a
reload changes them; `metrics.listen` is bound once at start (a change needs a restart).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Dict, Mapping, Optional, Protocol, Set

from spotwatch.config.schema import Config
from spotwatch.detection.notices import Notice, response_starts
from spotwatch.detection.watcher import PollReport
from spotwatch.logevents import emit
from spotwatch.response.deadline import deadline_clock
from spotwatch.response.eventjson import OPENING_FIELDS, event_json, opening_kind
from spotwatch.response.plan import Plan, Step, StepOutcome
from spotwatch.response.responder import Response
from spotwatch.state.files import iso
from spotwatch.state.schema import OK, SKIPPED
from spotwatch.telemetry.delivery import EXIT_FLUSH
from spotwatch.telemetry.metrics import Metrics, MetricsServer, TextfileWriter, start_server
from spotwatch.telemetry.sinks import EventSinks, any_sink_configured


class DaemonView(Protocol):
    """What telemetry reads of the daemon it serves (its config follows reloads)."""

    config: Config
    client: Any

    @property
    def instance_id(self) -> Optional[str]: ...


log = logging.getLogger("spotwatch.telemetry")


class TokenRenewals:
    """A counter over the daemon's IMDS clients: a reload that replaces the client (and
    restarts its count at 0) must not make the exported counter go backwards."""

    def __init__(self) -> None:
        self._client: Any = None
        self._base = 0
        self._last = 0

    def total(self, client: Any) -> int:
        if client is not self._client:
            self._base += self._last
            self._client, self._last = client, 0
        if client is not None:
            self._last = int(getattr(client, "token_renewals", 0))
        return self._base + self._last


class Telemetry:
    """Heard by the responder (`ResponseListener`): "response started" with the response's
    notice and deadline, then every step. Never computes a deadline of its own."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.daemon: Optional[DaemonView] = None
        self.metrics = Metrics(config.poll_interval)
        self.textfile = TextfileWriter()
        self.server: Optional[MetricsServer] = None
        self.sinks = EventSinks(self._config)
        self._renewals = TokenRenewals()
        self.metrics.token_renewals = self._token_renewals
        self._scheduled_seen: Set[str] = set()  # trackers of the scheduled events known

    # ----------------------------------------------------------------- daemon seams

    def bind(self, daemon: DaemonView) -> None:
        """on_start: the prepared daemon; start serving when `metrics.listen` is set."""
        self.daemon = daemon
        if self.config.metrics.listen and self.server is None:
            self.server = start_server(self.metrics, self.config.metrics.listen)

    def on_poll(self, report: PollReport) -> None:
        config = self._config()
        self.metrics.poll_interval = config.poll_interval
        self.metrics.on_poll(report)
        if config.metrics.textfile:
            self.textfile.write(config.metrics.textfile, self.metrics.render())
        self._tell_waiting(report, config)

    def _tell_waiting(self, report: PollReport, config: Config) -> None:
        """A scheduled event first seen days ahead waits for its response: sinks hear of it
        now, as a `notice` event with `result` "waiting" and `starts` (when its response
        starts; that response's own `notice` event follows then)."""
        known = {
            tracker: notice
            for tracker, notice in report.known.items()
            if notice.event_code is not None and notice.action != "cancel"
        }
        for tracker, notice in known.items():
            starts = response_starts(notice, config.scheduled_events.lead)
            if tracker not in self._scheduled_seen and time.time() < starts:
                fields = {"step": None, "result": "waiting", "detail": "", "starts": iso(starts)}
                deadline = deadline_clock(notice, config).deadline_epoch
                self._send(notice, deadline, "notice", fields)
        self._scheduled_seen = set(known)

    def response_started(self, response: Response) -> None:
        if not response.resumed:  # the process that saw the notice counted it: count once
            self.metrics.on_notice(response.key, response.notice)
        self.event(response, opening_kind(response.notice), OPENING_FIELDS)

    def journal(self, response: Response) -> TelemetryJournal:
        return TelemetryJournal(self, response)

    def finish(self, seconds_left: float) -> None:
        """on_stop: events not yet delivered get EXIT_FLUSH at most, never past the exit."""
        self.sinks.finish(max(0.0, min(EXIT_FLUSH, seconds_left)))

    # ----------------------------------------------------------------- helpers

    def _config(self) -> Config:
        return self.daemon.config if self.daemon is not None else self.config

    def _token_renewals(self) -> int:
        return self._renewals.total(self.daemon.client if self.daemon is not None else None)

    def event(self, response: Response, kind: str, fields: Mapping[str, Any]) -> None:
        """Queue one event about `response` for every sink; never raises."""
        self._send(response.notice, response.deadline_epoch, kind, fields)

    def _send(
        self, notice: Notice, deadline: float, kind: str, fields: Mapping[str, Any]
    ) -> None:
        if not any_sink_configured(self._config()):
            return
        try:
            instance_id = self.daemon.instance_id if self.daemon is not None else None
            event = event_json(kind, notice, deadline, instance_id, fields)
            self.sinks.send(event, deadline)
        except Exception as failure:  # telemetry must never break the response
            emit(log, logging.ERROR, "event-failed", f"event not queued: {failure!r}")


class TelemetryJournal:
    """A `StepJournal` beside the state file: step metrics and step/complete events."""

    def __init__(self, telemetry: Telemetry, response: Response) -> None:
        self.telemetry = telemetry
        self.response = response

    def finished_status(self, step: str) -> Optional[str]:
        return None  # the state file decides what finished

    def step_started(self, step: Step, wall: float) -> None:
        self.telemetry.metrics.step_started(self.response.key, step)

    def step_ended(self, step: Step, outcome: StepOutcome, started: float, ended: float) -> None:
        self.telemetry.metrics.step_ended(step, outcome, started, ended)
        self.telemetry.event(
            self.response,
            "step",
            {
                "step": step.name,
                "kind": step.kind,
                "result": outcome.status,
                "detail": outcome.detail,
                "started": iso(started),
                "ended": iso(ended),
            },
        )

    def response_ended(self, plan: Plan, outcomes: Dict[str, StepOutcome]) -> None:
        good = all(o.status in (OK, SKIPPED) for o in outcomes.values())
        self.telemetry.event(
            self.response,
            "complete",
            {
                "step": None,
                "result": "ok" if good else "failed",
                "detail": ", ".join(f"{n}={o.status}" for n, o in outcomes.items()),
                "steps": {name: o.status for name, o in outcomes.items()},
            },
        )
