"""Metrics and webhook events, plugged into the daemon's seams (`DaemonHooks`).

Always attached, cheap when nothing is configured: counters are kept in memory (a few
dictionary updates per poll), the textfile is written only when `metrics.textfile` is set,
an event sink's thread starts only with its first event (`sinks`: webhook, SNS, EventBridge).
The textfile path and the sink settings are read from the daemon's config each time, so a
reload changes them; `metrics.listen` is bound once at start (a change needs a restart).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Dict, Optional

from spotwatch.config.schema import Config
from spotwatch.detection.notices import Notice
from spotwatch.detection.watcher import PollReport
from spotwatch.logevents import emit
from spotwatch.response.plan import OK, SKIPPED, Plan, Step, StepOutcome
from spotwatch.state.store import iso
from spotwatch.telemetry.metrics import Metrics, MetricsServer, TextfileWriter, start_server
from spotwatch.telemetry.sinks import EventSinks, any_sink_configured

if TYPE_CHECKING:
    from spotwatch.daemon.shell import Daemon

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
    def __init__(self, config: Config) -> None:
        self.config = config
        self.daemon: Optional[Daemon] = None
        self.metrics = Metrics(config.poll_interval)
        self.textfile = TextfileWriter()
        self.server: Optional[MetricsServer] = None
        self.webhook = EventSinks(self._config)
        self._renewals = TokenRenewals()
        self._notices: Dict[str, Notice] = {}
        self.metrics.token_renewals = self._token_renewals

    # ----------------------------------------------------------------- daemon seams

    def bind(self, daemon: Daemon) -> None:
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

    def on_notice(self, monitor: str, notice: Notice) -> None:
        self._notices[monitor] = notice
        self.metrics.on_notice(monitor, notice)
        self._event(monitor, "notice", notice, {"step": None, "result": None, "detail": ""})

    def journal(self, monitor: str) -> TelemetryJournal:
        return TelemetryJournal(self, monitor)

    # ----------------------------------------------------------------- helpers

    def _config(self) -> Config:
        return self.daemon.config if self.daemon is not None else self.config

    def _token_renewals(self) -> int:
        return self._renewals.total(self.daemon.client if self.daemon is not None else None)

    def notice_of(self, monitor: str) -> Optional[Notice]:
        daemon = self.daemon
        if daemon is not None:
            active = daemon.responses.get(monitor)
            if active is not None:
                return active.clock.notice
        return self._notices.get(monitor)

    def deadline_of(self, monitor: str, notice: Notice) -> float:
        daemon = self.daemon
        if daemon is not None:
            active = daemon.responses.get(monitor)
            if active is not None and active.clock.notice.action == notice.action:
                return active.clock.deadline_epoch
        margin = 0.0 if notice.action == "hibernate" else self._config().deadline_margin
        return notice.epoch - margin

    def _event(
        self, monitor: str, kind: str, notice: Optional[Notice], fields: Dict[str, Any]
    ) -> None:
        if not any_sink_configured(self._config()):
            return
        try:
            deadline = self.deadline_of(monitor, notice) if notice is not None else None
            event = {
                "event": kind,
                "instance_id": self.daemon.instance_id if self.daemon is not None else None,
                "action": notice.action if notice is not None else None,
                "notice_time": notice.time_text if notice is not None else None,
                "deadline": iso(deadline),
                "source": notice.source if notice is not None else None,
                "time": iso(time.time()),
                **fields,
            }
            give_up = deadline if deadline is not None else time.time()
            self.webhook.send(event, give_up)
        except Exception as failure:  # telemetry must never break the response
            emit(log, logging.ERROR, "webhook-failed", f"webhook event not queued: {failure!r}")


class TelemetryJournal:
    """A `StepJournal` beside the state file: step metrics and step/complete events."""

    def __init__(self, telemetry: Telemetry, monitor: str) -> None:
        self.telemetry = telemetry
        self.monitor = monitor

    def finished_status(self, step: str) -> Optional[str]:
        return None  # the state file decides what finished

    def step_started(self, step: Step, wall: float) -> None:
        self.telemetry.metrics.step_started(self.monitor, step)

    def step_ended(self, step: Step, outcome: StepOutcome, started: float, ended: float) -> None:
        self.telemetry.metrics.step_ended(step, outcome, started, ended)
        self.telemetry._event(
            self.monitor,
            "step",
            self.telemetry.notice_of(self.monitor),
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
        self.telemetry._event(
            self.monitor,
            "complete",
            self.telemetry.notice_of(self.monitor) or plan.notice,
            {
                "step": None,
                "result": "ok" if good else "failed",
                "detail": ", ".join(f"{n}={o.status}" for n, o in outcomes.items()),
                "steps": {name: o.status for name, o in outcomes.items()},
            },
        )
