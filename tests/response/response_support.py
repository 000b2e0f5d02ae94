"""Helpers for the response tests: notices, contexts, an in-memory journal, a log handler,
and a /proc view of process groups (independent of the code under test, so the tests do not
check the hook runner with its own eyes). Fixtures live in conftest.py."""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Dict, List, Optional, Tuple

from spotwatch.detection.notices import Notice
from spotwatch.response.deadline import NoticeClock
from spotwatch.response.plan import Plan, Step, StepContext, StepOutcome

INSTANCE_ID = "i-0123456789abcdef0"


def notice_in(seconds: float, action: str = "terminate", source: str = "instance-action") -> Notice:
    """A notice `seconds` from now (exact, with the fraction written out)."""
    moment = datetime.fromtimestamp(time.time() + seconds, timezone.utc)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return Notice(action, moment, text, source)


def whole_second_notice(
    seconds: float, action: str = "terminate", source: str = "instance-action"
) -> Notice:
    """A notice the way IMDS writes it: whole seconds, `YYYY-MM-DDTHH:MM:SSZ`."""
    moment = datetime.fromtimestamp(int(time.time() + seconds), timezone.utc)
    return Notice(action, moment, moment.strftime("%Y-%m-%dT%H:%M:%SZ"), source)


def context(
    seconds_to_deadline: float,
    *,
    margin: float = 10.0,
    action: str = "terminate",
    dry_run: bool = False,
) -> StepContext:
    """A context whose deadline (notice time - margin) is `seconds_to_deadline` away."""
    clock = NoticeClock(notice_in(seconds_to_deadline + margin, action), margin)
    return StepContext(clock=clock, instance_id=INSTANCE_ID, dry_run=dry_run)


def move_notice(ctx: StepContext, seconds_to_deadline: float) -> None:
    """The notice time moves so the deadline is `seconds_to_deadline` from now."""
    old = ctx.clock.notice
    fresh = notice_in(seconds_to_deadline + ctx.clock.margin, old.action, old.source)
    ctx.clock.update(fresh)


@dataclass
class Entry:
    step: str
    status: str
    detail: str
    started: float
    ended: float


class ListJournal:
    """An in-memory StepJournal: what the runner reported, in order."""

    def __init__(self, finished: Optional[Dict[str, str]] = None) -> None:
        self.finished = dict(finished or {})
        self.started: List[Tuple[str, float]] = []
        self.ended: List[Entry] = []
        self.response_end: Optional[Dict[str, StepOutcome]] = None
        self._lock = threading.Lock()

    def finished_status(self, step: str) -> Optional[str]:
        return self.finished.get(step)

    def step_started(self, step: Step, wall: float) -> None:
        with self._lock:
            self.started.append((step.name, wall))

    def step_ended(self, step: Step, outcome: StepOutcome, started: float, ended: float) -> None:
        with self._lock:
            self.ended.append(Entry(step.name, outcome.status, outcome.detail, started, ended))

    def response_ended(self, plan: Plan, outcomes: Dict[str, StepOutcome]) -> None:
        self.response_end = dict(outcomes)


class Records(logging.Handler):
    """Keeps (event, message, fields) of every record; output lines only counted when asked."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.events: List[Tuple[str, str, Dict[str, object]]] = []
        self.output_bytes = 0
        self.output_lines = 0
        self.keep_output = True
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        data = getattr(record, "spotwatch", {}) or {}
        event = str(data.get("event", ""))
        message = record.getMessage()
        with self._guard:
            if event == "hook-output":
                self.output_bytes += len(message)
                self.output_lines += 1
                if not self.keep_output:
                    return
            self.events.append((event, message, dict(data)))

    def messages(self, event: str, hook: Optional[str] = None) -> List[str]:
        return [
            message
            for name, message, data in self.events
            if name == event and (hook is None or data.get("hook") == hook)
        ]

    def output(self, hook: str) -> List[str]:
        """The hook's logged output lines, without the `[name] ` tag."""
        prefix = f"[{hook}] "
        return [m[len(prefix) :] for m in self.messages("hook-output", hook)]


def live_group_members(pgid: int) -> List[int]:
    """Processes of group `pgid` that are not zombies, read straight from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        state, _ppid, group = stat[stat.rfind(b")") + 2 :].split()[:3]
        if int(group) == pgid and state not in (b"Z", b"X"):
            found.append(int(entry))
    return found


def pid_alive(pid: int) -> bool:
    """True if `pid` runs and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 :].split()[0] not in (b"Z", b"X")


def wait_for_file(path: str, timeout: float = 10.0) -> str:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
            if text.endswith("\n"):
                return text
        except FileNotFoundError:
            pass
        time.sleep(0.02)
    raise AssertionError(f"{path} did not appear within {timeout} s")


def read_floats(path: str) -> List[float]:
    with open(path, encoding="utf-8") as handle:
        return [float(line) for line in handle.read().split()]


@dataclass(frozen=True)
class ThrowawayUser:
    name: str
    uid: int
    gid: int
    extra_group: str
    extra_gid: int
    home: str
