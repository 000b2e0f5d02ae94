"""The rehearsal's timeline: what happened, relative to the moment the notice was raised.

It listens to the daemon's responder like telemetry does ("response started" with the
response's deadline, then every step), so it judges every step against the deadline the
daemon itself uses.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import IO, Dict, Optional

from spotwatch.detection.notices import Notice
from spotwatch.detection.watcher import PollReport
from spotwatch.response.plan import Plan, Step, StepOutcome
from spotwatch.response.responder import Response
from spotwatch.state.schema import OK, SKIPPED


@dataclass
class StepRecord:
    name: str
    kind: str
    started: float  # wall
    ended: Optional[float] = None
    status: str = "running"
    detail: str = ""


class Timeline:
    """What happened, relative to the moment the notice was raised; printed as it happens."""

    def __init__(self, out: IO[str], *, live: bool) -> None:
        self.out = out
        self.live = live  # a terminal: keep one updating progress line at the bottom
        self._lock = threading.RLock()
        self._progress_width = 0
        self.t0_wall: Optional[float] = None
        self.first_poll = threading.Event()
        self.detected = threading.Event()
        self.done = threading.Event()
        self.detected_wall: Optional[float] = None
        self.notice: Optional[Notice] = None
        self.deadline: Optional[float] = None  # wall
        self.steps: Dict[str, StepRecord] = {}
        self.interval = 0.0
        self.configured_interval = 0.0
        self.completed = threading.Event()  # the response ended (not merely the rehearsal)

    # -- output

    def rel(self, wall: Optional[float]) -> str:
        if wall is None or self.t0_wall is None:
            return "-"
        return f"t{wall - self.t0_wall:+.3f}"

    def left(self, wall: float) -> float:
        assert self.deadline is not None
        return self.deadline - wall

    def line(self, text: str, wall: Optional[float] = None) -> None:
        stamp = self.rel(wall if wall is not None else time.time()) if self.t0_wall else ""
        with self._lock:
            self._clear_progress()
            self.out.write(f"  {stamp:>10}  {text}\n" if stamp else f"{text}\n")
            self.out.flush()

    def plain(self, text: str) -> None:
        with self._lock:
            self._clear_progress()
            self.out.write(text + "\n")
            self.out.flush()

    def _clear_progress(self) -> None:
        if self._progress_width:
            self.out.write("\r" + " " * self._progress_width + "\r")
            self._progress_width = 0

    def progress(self) -> None:
        if not self.live or self.t0_wall is None:
            return
        now = time.time()
        parts = [f"t+{now - self.t0_wall:.1f}"]
        if self.deadline is not None:
            parts.append(f"deadline in {self.left(now):.1f} s")
        elif not self.detected.is_set():
            parts.append("waiting for the daemon to see the notice")
        with self._lock:
            running = [r for r in self.steps.values() if r.ended is None]
            if running:
                parts.append(
                    "running: " + ", ".join(f"{r.name} {now - r.started:.1f} s" for r in running)
                )
            text = "  ".join(parts)[:160]
            self.out.write("\r" + text + " " * max(0, self._progress_width - len(text)))
            self.out.flush()
            self._progress_width = len(text)

    # -- daemon seams

    def on_poll(self, report: PollReport) -> None:
        self.first_poll.set()

    def response_started(self, response: Response) -> None:
        """Before the response's first step: the detection line comes before any step's.
        The deadline is the response's own (the daemon's one rule)."""
        now = time.time()
        self.detected_wall = now
        self.notice = response.notice
        self.deadline = response.deadline_epoch
        latency = now - (self.t0_wall or now)
        self.line(
            f"detected after {latency:.3f} s (polling every {self.interval:g} s here, every"
            f" {self.configured_interval:g} s as configured); deadline t+"
            f"{self.deadline - (self.t0_wall or now):.1f}, {self.left(now):.1f} s away",
            now,
        )
        self.detected.set()

    def journal(self, response: Response) -> RehearsalJournal:
        return RehearsalJournal(self)


class RehearsalJournal:
    def __init__(self, timeline: Timeline) -> None:
        self.timeline = timeline

    def finished_status(self, step: str) -> Optional[str]:
        return None

    def step_started(self, step: Step, wall: float) -> None:
        with self.timeline._lock:
            self.timeline.steps[step.name] = StepRecord(step.name, step.kind, wall)
        self.timeline.line(f"start   {step.name}", wall)

    def step_ended(self, step: Step, outcome: StepOutcome, started: float, ended: float) -> None:
        timeline = self.timeline
        with timeline._lock:
            record = timeline.steps.setdefault(step.name, StepRecord(step.name, step.kind, started))
            record.ended, record.status, record.detail = ended, outcome.status, outcome.detail
        timeline.line(
            f"end     {step.name}: {verdict(timeline, record)}  ({outcome.detail})", ended
        )

    def response_ended(self, plan: Plan, outcomes: Dict[str, StepOutcome]) -> None:
        self.timeline.line("response complete")
        self.timeline.completed.set()
        self.timeline.done.set()


def missed(timeline: Timeline, record: StepRecord) -> bool:
    return (
        record.ended is not None
        and timeline.deadline is not None
        and record.ended > timeline.deadline
    )


def verdict(timeline: Timeline, record: StepRecord) -> str:
    """`ok, 108.4 s left` / `timeout  MISSED by 0.6 s` / `failed, 3.0 s left`."""
    if record.ended is None:
        return f"{record.status}  DID NOT END"
    left = timeline.left(record.ended) if timeline.deadline is not None else 0.0
    if missed(timeline, record):
        return f"{record.status.upper()}  MISSED the deadline by {-left:.1f} s"
    marker = "" if record.status in (OK, SKIPPED) else f"{record.status.upper()}  "
    return f"{marker or record.status + ', '}{left:.1f} s left"


class TimelineLogHandler(logging.Handler):
    """Hook output and warnings, in the timeline, in the order they happen."""

    SHOWN_ELSEWHERE = frozenset({"notice", "hook-end", "hook-failed", "hook-start"})

    def __init__(self, timeline: Timeline) -> None:
        super().__init__(logging.INFO)
        self.timeline = timeline

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields = getattr(record, "spotwatch", None) or {}
            event = fields.get("event") if isinstance(fields, dict) else None
            if event == "hook-output":
                self.timeline.line(f"  | {record.getMessage()}", record.created)
            elif record.levelno >= logging.WARNING and event not in self.SHOWN_ELSEWHERE:
                self.timeline.line(
                    f"{record.levelname.lower()}: {record.getMessage()}", record.created
                )
        except Exception:
            self.handleError(record)
