"""Prometheus metrics: a node_exporter textfile and/or an HTTP `/metrics` + `/healthz`.

Names (fixed: dashboards and alerts use them): `spotwatch_polls_total{result}`,
`spotwatch_last_poll_success_timestamp_seconds`, `spotwatch_notices_total{action}`,
`spotwatch_step_duration_seconds{step}`, `spotwatch_step_failures_total{step}`, plus
`spotwatch_detection_latency_seconds` (from the start of the poll that saw the last notice
to the start of its response's first step), `spotwatch_imds_token_renewals_total`,
`spotwatch_last_poll_duration_seconds`, `spotwatch_scheduled_events{code}` (the scheduled
events IMDS lists now and that are not canceled, a waiting one included, by code),
`spotwatch_poll_interval_seconds` (the configured interval: "no successful poll for 3
intervals" is an alert only with it) and
`spotwatch_next_scheduled_event_timestamp_seconds{code}` (the earliest NotBefore of the
scheduled events listed now and not canceled, by event code: "within a day" is an alert
only with it). The Grafana dashboard and the Prometheus rules in monitoring/ query
these names; tests/monitoring/ scrapes a real daemon to hold them to it.

Why not prometheus_client: it would be one more package on every instance for about a
dozen series that never change shape, and here it costs more than it gives. Measured on
CPython 3.11 with prometheus_client 0.26, in a process that already holds the daemon's
modules (~24 MB RSS): importing it adds ~40 ms and 1.9 MB RSS (this module with telemetry
and webhook: ~12 ms, 0.9 MB); `generate_latest` takes ~190 µs CPU against ~6 µs for
`Metrics.render`; `write_to_textfile` ~500 µs CPU per poll against ~170 µs for
`TextfileWriter.write` (almost all of it the kernel's open/write/rename). Its
`start_http_server` has no place for our `/healthz` rule either. The text format is small,
stable and documented, so our own code does the job at least as well (the project's rule:
a dependency only when a well-kept library does the job better).

The textfile is rewritten after every poll (its timestamp changes every poll): written to a
dot-file beside it (node_exporter only reads `*.prom`) with mode 0644, then renamed into
place, so node_exporter sees the old or the new file, whole. No fsync: a lost update costs
one poll's worth of freshness. `/healthz` answers 200 while the last successful poll is
younger than 3 poll intervals, else 503 with the age in the body.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, List, Optional, Tuple

from spotwatch.clouds.aws.scheduled import EVENT_ACTIONS
from spotwatch.detection.notices import Notice
from spotwatch.detection.watcher import PollReport
from spotwatch.logevents import RepeatFilter, emit
from spotwatch.response.plan import Step, StepOutcome
from spotwatch.state.files import write_atomically
from spotwatch.state.schema import FAILED, TIMEOUT

log = logging.getLogger("spotwatch.metrics")

HEALTHY_POLLS = 3  # /healthz: the last successful poll is younger than this many intervals
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
POLL_RESULTS = ("ok", "notice", "degraded", "error")
# Shown at 0 before they happen, so a dashboard's rate() has a series from the start.
INITIAL_NOTICES = (
    ("terminate", "instance-action"),
    ("stop", "instance-action"),
    ("hibernate", "instance-action"),
    ("rebalance", "rebalance-recommendation"),
)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return repr(float(value)) if value != int(value) or abs(value) >= 1e15 else str(int(value))


class Metrics:
    """The daemon's numbers; every method is thread-safe and cheap."""

    def __init__(
        self,
        poll_interval: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.poll_interval = poll_interval
        self._clock = clock
        self._wall = wall
        self._lock = threading.Lock()
        self._started = clock()
        self.polls: Dict[str, int] = dict.fromkeys(POLL_RESULTS, 0)
        self.last_success_wall: Optional[float] = None
        self.last_success_mono: Optional[float] = None
        self.last_poll_duration: Optional[float] = None
        self.notices: Dict[Tuple[str, str], int] = dict.fromkeys(INITIAL_NOTICES, 0)
        self.step_duration: Dict[str, float] = {}
        self.step_failures: Dict[str, int] = {}
        # Every code at 0 from the start, so a dashboard has its series before an event.
        self.scheduled_events: Dict[str, int] = dict.fromkeys(EVENT_ACTIONS, 0)
        self.detection_latency: Optional[float] = None
        self.next_scheduled: Dict[str, float] = {}  # event code -> earliest NotBefore
        # Detection latency is measured from the poll's start (known only in on_poll, which
        # comes after on_notice) to the first step's start: whichever comes second computes.
        self._detecting: Dict[str, List[Optional[float]]] = {}  # monitor -> [poll, step]
        self.token_renewals: Callable[[], int] = lambda: 0

    # ----------------------------------------------------------------- updates

    def on_poll(self, report: PollReport) -> None:
        with self._lock:
            self.polls[report.result] = self.polls.get(report.result, 0) + 1
            self.last_poll_duration = report.duration
            if report.ok:
                self.last_success_wall = report.wall_time
                self.last_success_mono = report.started
            for pending in self._detecting.values():
                if pending[0] is None:
                    pending[0] = report.started
            self._settle_detection()
            if report.ok:  # a failed poll says nothing about the events
                self.scheduled_events = dict.fromkeys(self.scheduled_events, 0)
                self.next_scheduled = {}
                for notice in report.known.values():
                    if notice.event_code is not None and notice.action != "cancel":
                        code, epoch = notice.event_code, notice.epoch
                        self.scheduled_events[code] = self.scheduled_events.get(code, 0) + 1
                        self.next_scheduled[code] = min(epoch, self.next_scheduled.get(code, epoch))

    def on_notice(self, response: str, notice: Notice) -> None:
        with self._lock:
            key = (notice.action, notice.source)
            self.notices[key] = self.notices.get(key, 0) + 1
            self._detecting[response] = [None, None]

    def step_started(self, response: str, step: Step) -> None:
        with self._lock:
            self.step_failures.setdefault(step.name, 0)
            pending = self._detecting.get(response)
            if pending is not None and pending[1] is None:
                pending[1] = self._clock()
                self._settle_detection()

    def step_ended(self, step: Step, outcome: StepOutcome, started: float, ended: float) -> None:
        with self._lock:
            self.step_duration[step.name] = max(0.0, ended - started)
            failed = outcome.status in (FAILED, TIMEOUT)
            self.step_failures[step.name] = self.step_failures.get(step.name, 0) + int(failed)

    def _settle_detection(self) -> None:
        for monitor, (poll_started, step_started) in list(self._detecting.items()):
            if poll_started is not None and step_started is not None:
                self.detection_latency = max(0.0, step_started - poll_started)
                del self._detecting[monitor]

    # ----------------------------------------------------------------- reading

    def render(self) -> str:
        """The Prometheus text exposition format (0.0.4)."""
        renewals = self.token_renewals()
        with self._lock:
            out: List[str] = []
            add = out.append
            add("# HELP spotwatch_polls_total IMDS polls by result (ok, notice, degraded, error).")
            add("# TYPE spotwatch_polls_total counter")
            for result, count in self.polls.items():
                add(f'spotwatch_polls_total{{result="{_escape(result)}"}} {count}')
            if self.last_success_wall is not None:
                add("# HELP spotwatch_last_poll_success_timestamp_seconds Last successful poll.")
                add("# TYPE spotwatch_last_poll_success_timestamp_seconds gauge")
                add(f"spotwatch_last_poll_success_timestamp_seconds {self.last_success_wall:.3f}")
            if self.last_poll_duration is not None:
                add("# HELP spotwatch_last_poll_duration_seconds How long the last poll took.")
                add("# TYPE spotwatch_last_poll_duration_seconds gauge")
                add(f"spotwatch_last_poll_duration_seconds {self.last_poll_duration:.6f}")
            add("# HELP spotwatch_poll_interval_seconds The configured poll interval.")
            add("# TYPE spotwatch_poll_interval_seconds gauge")
            add(f"spotwatch_poll_interval_seconds {_number(self.poll_interval)}")
            add("# HELP spotwatch_notices_total Notices handled, by action and source.")
            add("# TYPE spotwatch_notices_total counter")
            for (action, source), count in self.notices.items():
                labels = f'action="{_escape(action)}",source="{_escape(source)}"'
                add(f"spotwatch_notices_total{{{labels}}} {count}")
            if self.step_duration:
                add("# HELP spotwatch_step_duration_seconds Duration of each step's last run.")
                add("# TYPE spotwatch_step_duration_seconds gauge")
                for step, seconds in self.step_duration.items():
                    add(f'spotwatch_step_duration_seconds{{step="{_escape(step)}"}} {seconds:.6f}')
            if self.step_failures:
                add("# HELP spotwatch_step_failures_total Steps that failed or timed out.")
                add("# TYPE spotwatch_step_failures_total counter")
                for step, count in self.step_failures.items():
                    add(f'spotwatch_step_failures_total{{step="{_escape(step)}"}} {count}')
            if self.detection_latency is not None:
                add(
                    "# HELP spotwatch_detection_latency_seconds From the start of the poll "
                    "that saw the last notice to the start of its first step."
                )
                add("# TYPE spotwatch_detection_latency_seconds gauge")
                add(f"spotwatch_detection_latency_seconds {self.detection_latency:.6f}")
            add(
                "# HELP spotwatch_scheduled_events Scheduled events listed now and not "
                "canceled (waiting for their response, or responded to), by code."
            )
            add("# TYPE spotwatch_scheduled_events gauge")
            for code, count in self.scheduled_events.items():
                add(f'spotwatch_scheduled_events{{code="{_escape(code)}"}} {count}')
            if self.next_scheduled:
                add(
                    "# HELP spotwatch_next_scheduled_event_timestamp_seconds NotBefore of the "
                    "earliest scheduled event listed and not canceled, by event code."
                )
                add("# TYPE spotwatch_next_scheduled_event_timestamp_seconds gauge")
                for code, epoch in sorted(self.next_scheduled.items()):
                    name = "spotwatch_next_scheduled_event_timestamp_seconds"
                    add(f'{name}{{code="{_escape(code)}"}} {epoch:.3f}')
            add("# HELP spotwatch_imds_token_renewals_total IMDSv2 tokens obtained.")
            add("# TYPE spotwatch_imds_token_renewals_total counter")
            add(f"spotwatch_imds_token_renewals_total {renewals}")
        add("")
        return "\n".join(out)

    def health(self) -> Tuple[int, str]:
        """(HTTP status, body) for /healthz."""
        with self._lock:
            last = self.last_success_mono
        now = self._clock()
        limit = HEALTHY_POLLS * self.poll_interval
        if last is None:
            age = now - self._started
            return 503, f"no successful poll yet ({age:.1f} s since start)\n"
        age = max(0.0, now - last)
        if age < limit:
            return 200, f"ok: last successful poll {age:.1f} s ago\n"
        return 503, f"stale: last successful poll {age:.1f} s ago (limit {limit:g} s)\n"


class TextfileWriter:
    """Rewrites one `.prom` file atomically; failures are logged once, not every poll.

    We write as root into a folder others may write to (node_exporter's textfile folder is
    often group-writable), so the temp file must not be predictable or followable:
    `write_atomically` creates it with a random name, O_EXCL|O_NOFOLLOW, and a planted
    file or symlink never receives our write. The rename over the target replaces a symlink
    planted there by our own file; the link's target is never opened.
    """

    def __init__(self) -> None:
        self._failures = RepeatFilter(log, "metrics-textfile-failed")

    def write(self, path: str, text: str) -> bool:
        try:
            write_atomically(path, text.encode("utf-8"), mode=0o644)  # node_exporter reads it
        except OSError as failure:
            self._failures.failure(f"cannot write metrics file {path}: {failure.strerror}")
            return False
        self._failures.recovered(f"metrics file {path} written again")
        return True


def parse_listen(address: str) -> Tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


class _Server(ThreadingHTTPServer):
    daemon_threads = True


class _V6Server(_Server):
    address_family = socket.AF_INET6


class MetricsServer:
    """`metrics.listen`: GET /metrics and /healthz, served from a daemon thread."""

    def __init__(self, metrics: Metrics, address: str) -> None:
        self.metrics = metrics
        host, port = parse_listen(address)
        handler = _handler_for(metrics)
        server_class = _V6Server if ":" in host else _Server
        self.server = server_class((host, port), handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(
            target=self.server.serve_forever,
            kwargs={"poll_interval": 0.5},
            name="metrics-http",
            daemon=True,
        )

    def start(self) -> MetricsServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _handler_for(metrics: Metrics) -> Any:
    class Handler(BaseHTTPRequestHandler):
        server_version = "spotwatch"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._answer(200, metrics.render(), CONTENT_TYPE)
            elif path == "/healthz":
                status, body = metrics.health()
                self._answer(status, body, "text/plain; charset=utf-8")
            else:
                self._answer(404, "not found: try /metrics or /healthz\n", "text/plain")

        def _answer(self, status: int, body: str, content_type: str) -> None:
            data = body.encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # scrapes every few seconds must not fill the log

    return Handler


def start_server(metrics: Metrics, address: str) -> Optional[MetricsServer]:
    """Serve, or log why not: metrics must never keep the daemon from handling notices."""
    try:
        server = MetricsServer(metrics, address).start()
    except (OSError, ValueError) as failure:
        emit(
            log,
            logging.ERROR,
            "metrics-listen-failed",
            f"cannot serve metrics on {address}: {failure}",
        )
        return None
    emit(log, logging.INFO, "metrics-listen", f"serving /metrics and /healthz on {address}")
    return server
