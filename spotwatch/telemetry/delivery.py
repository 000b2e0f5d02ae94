"""One ordered, retried delivery path for every event sink (webhook, SNS, EventBridge).

Each sink has a lane of its own: a queue and a thread. A lane delivers its events one at a
time, in the order queued, so each sink sees notice, steps and complete in sequence; and a
slow or failing sink only holds up its own lane, never another sink nor the response
(queueing never blocks).

Each event is tried `1 + retries` times with exponential, jittered backoff while there is
time: no retry starts after the event's give-up moment (the notice's deadline, or a little
after the event for a notice already past it), because a message about an instance that is
gone helps no one at that point. The sink says which failures are worth retrying.

Failure text is scrubbed of every secret fragment the sink names *before* it is shortened
for the log: cutting first could leave the head of a secret that no longer matches the
whole, and that part would be logged.
"""

from __future__ import annotations

import atexit
import logging
import queue
import random
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from spotwatch.logevents import emit

log = logging.getLogger("spotwatch.events")

BACKOFF_BASE = 0.5
BACKOFF_CAP = 8.0
MIN_GIVE_UP = 10.0  # an event always gets at least this long, even past the deadline
EXIT_FLUSH = 5.0  # at exit, undelivered events get at most this long, all sinks together
FAILURE_CHARS = 300  # how much of a failure's text is logged
REDACTED = "***"

Attempt = Optional[Tuple[str, bool]]
"""None when delivered, else (why it failed, whether a retry may succeed)."""


class Sink:
    """One destination. Subclasses deliver one event per `attempt`; the lane does the rest."""

    name = "sink"  # log event prefix: webhook-retry, sns-failed, ...

    def configured(self) -> bool:
        raise NotImplementedError

    def attempt(self, event: Dict[str, Any]) -> Attempt:
        raise NotImplementedError

    def where(self) -> str:
        """Where events go, safe to log."""
        raise NotImplementedError

    def secrets(self) -> List[str]:
        """Fragments that must never reach the log, whole or in part."""
        return []

    def retries(self) -> int:
        raise NotImplementedError


def redact(text: str, secrets: List[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        if secret:
            text = text.replace(secret, REDACTED)
    return text


def loggable(failure: str, secrets: List[str]) -> str:
    """Redact first, then cut: no part of a secret survives the cut."""
    text = redact(failure, secrets)
    return text if len(text) <= FAILURE_CHARS else text[: FAILURE_CHARS - 1] + "…"


@dataclass
class _Item:
    event: Dict[str, Any]
    give_up: float  # wall time after which no retry starts


_STOP = object()
_LANES: weakref.WeakSet[Lane] = weakref.WeakSet()
_at_exit = threading.Lock()
_at_exit_registered = False  # once per process, not once per lane


def flush_all(timeout: float) -> bool:
    """Wait (bounded) until every lane of this process has delivered or given up."""
    return flush(list(_LANES), timeout)


def flush(lanes: List[Lane], timeout: float) -> bool:
    """Wait until these lanes have delivered or given up: `timeout` in all, not each."""
    end = time.monotonic() + timeout
    return all(lane.flush(max(0.0, end - time.monotonic())) for lane in lanes)


def _flush_at_exit() -> None:
    """The interpreter exits: lanes nobody flushed for the exit get EXIT_FLUSH in all (a
    daemon flushes its own within its exit deadline: `EventSinks.finish`)."""
    flush([lane for lane in list(_LANES) if not lane.finished], EXIT_FLUSH)


def _register_exit_flush() -> None:
    global _at_exit_registered
    with _at_exit:
        if not _at_exit_registered:
            _at_exit_registered = True
            atexit.register(_flush_at_exit)


class Lane:
    """A sink's queue and thread (started with its first event)."""

    def __init__(self, sink: Sink, *, backoff_base: float = BACKOFF_BASE) -> None:
        self.sink = sink
        self._backoff_base = backoff_base
        self._queue: queue.Queue[Any] = queue.Queue()
        self._thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()
        self.delivered = 0
        self.dropped = 0
        self.finished = False  # flushed for the exit already: the exit flush leaves it be
        _LANES.add(self)

    def put(self, event: Dict[str, Any], give_up: float) -> None:
        """Queue an event; never blocks."""
        with self._lock:
            if self._thread is None:
                name = f"events-{self.sink.name}"
                self._thread = threading.Thread(target=self._run, name=name, daemon=True)
                self._thread.start()
                _register_exit_flush()
        self._queue.put(_Item(event, max(give_up, time.time() + MIN_GIVE_UP)))

    def pending(self) -> int:
        """Events queued and not yet delivered or given up."""
        return self._queue.unfinished_tasks

    def flush(self, timeout: float) -> bool:
        """Wait until every queued event was delivered or given up; False on timeout."""
        end = time.monotonic() + timeout
        while self.pending():
            if time.monotonic() >= end:
                return False
            time.sleep(0.02)
        return True

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is _STOP:
                    return
                self._deliver(item)
            except Exception as failure:  # never let one event kill the lane
                text = loggable(f"{type(failure).__name__}: {failure}", self._secrets())
                emit(log, logging.ERROR, f"{self.sink.name}-failed", f"event sink failed: {text}")
            finally:
                self._queue.task_done()

    def _secrets(self) -> List[str]:
        try:
            return self.sink.secrets()
        except Exception:
            return []

    def _deliver(self, item: _Item) -> None:
        sink = self.sink
        if not sink.configured():  # a reload removed it
            return
        kind = item.event.get("event")
        name = sink.name
        attempt = 0
        while True:
            outcome = sink.attempt(item.event)
            if outcome is None:
                self.delivered += 1
                if attempt:
                    emit(
                        log,
                        logging.INFO,
                        f"{name}-delivered",
                        f"{name} {kind} event delivered to {sink.where()} after {attempt} retries",
                        sink=name,
                        sink_event=kind,
                    )
                return
            failure, retry = outcome
            failure = loggable(failure, self._secrets())
            pause = min(BACKOFF_CAP, self._backoff_base * 2**attempt) * random.uniform(0.5, 1.0)
            if not retry or attempt >= sink.retries() or time.time() + pause > item.give_up:
                self.dropped += 1
                emit(
                    log,
                    logging.ERROR,
                    f"{name}-failed",
                    f"{name} {kind} event to {sink.where()} not delivered: {failure}"
                    f" ({attempt + 1} attempts)",
                    sink=name,
                    sink_event=kind,
                )
                return
            emit(
                log,
                logging.WARNING,
                f"{name}-retry",
                f"{name} {kind} event to {sink.where()}: {failure}; retrying in {pause:.1f} s",
                sink=name,
                sink_event=kind,
            )
            time.sleep(pause)
            attempt += 1
