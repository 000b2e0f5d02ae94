"""The one small interface every signal is watched through, whatever the cloud.

A monitor asks its metadata service once and says what it saw: the notices there (none, one,
or several with an identity each), or that it could not tell. It knows nothing about
de-duplication or responses; the watcher feeds its answers to one `NoticeTracker` per
notice. Unusable bodies are logged once per distinct body, truncated.

To add a signal: a `Monitor` subclass in its cloud's folder (clouds/<cloud>/monitors.py)
with a `name`, a `check()` and, if it is not asked every poll, a `cadence`; the cloud's
`monitors()` lists it. Its notices then take the same road as the Spot notice: tracker,
responder, plan (docs/architecture.md).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable, Dict, FrozenSet, Optional, Sequence, Set, Tuple

from spotwatch.detection.metadata import MetadataClient, MetadataError, Reply
from spotwatch.detection.notices import Action, Notice, Parsed, Source, excerpt, iso_text
from spotwatch.logevents import emit

log = logging.getLogger("spotwatch.watcher")

MAX_REMEMBERED_BODIES = 64


@dataclass(frozen=True)
class Reading:
    ok: bool  # the metadata service gave a usable answer
    notices: Tuple[Notice, ...] = ()
    error: Optional[str] = None
    # When no notice was seen: the actions this "none" can vouch for (None: every action).
    # A known notice of another action is then neither seen nor counted absent.
    speaks_for: Optional[FrozenSet[str]] = None
    # A usable answer that still leaves the monitor half blind (why): the poll is degraded.
    degraded: Optional[str] = None

    @property
    def notice(self) -> Optional[Notice]:
        return self.notices[0] if self.notices else None


def seen(
    notice: Optional[Notice],
    *,
    speaks_for: Optional[FrozenSet[str]] = None,
    degraded: Optional[str] = None,
) -> Reading:
    """A usable reading with this notice (or none)."""
    notices = (notice,) if notice is not None else ()
    return Reading(True, notices, speaks_for=speaks_for, degraded=degraded)


class Monitor:
    """Base: `check(deadline)` asks the metadata service once (deadline on the monotonic
    clock). A monitor that watches beside the poll loop (a thread of its own) starts in
    `attach` and ends in `close`."""

    name = "monitor"
    # Seconds between checks; None: every poll (`poll_interval`).
    cadence: Optional[float] = None
    # Whether its answer decides the poll's result (ok / notice / degraded / error).
    decides_result = False
    # Its notices are scheduled events (an identity and a NotBefore each): their responses
    # wait for NotBefore - `scheduled_events.lead` and are canceled when the event is
    # called off before its NotBefore (daemon/scheduled.py).
    scheduled = False

    def __init__(self, client: MetadataClient) -> None:
        self.client = client
        self._reported: Set[bytes] = set()

    def check(self, deadline: float) -> Reading:
        raise NotImplementedError

    def adopt(self, known: Optional[Notice]) -> None:
        """A notice its trackers already know (at start: from the state file), once per
        tracker. Monitors whose notice time is their own reckoning keep to it, so a re-read
        is the same notice."""

    def attach(self, wake: Callable[[], None]) -> None:
        """Watched from now on; `wake` asks the poll loop for a poll now (from any thread)."""

    def close(self) -> None:
        """No longer watched (a reload replaced it, or the daemon stops)."""

    def _fetch(self, path: str, deadline: float) -> tuple[Optional[Reply], Optional[str]]:
        try:
            return self.client.get(path, deadline=deadline), None
        except MetadataError as failure:
            return None, str(failure)

    def _events(self, notices: Tuple[Notice, ...], problems: Sequence[str]) -> Reading:
        """A usable list of events: these notices, each unreadable event logged once. An
        unreadable event may be a known one: then none is counted absent this time."""
        for line in problems:
            self._report_malformed(Parsed(problem="event ignored"), line.encode())
        return Reading(ok=True, notices=notices, speaks_for=frozenset() if problems else None)

    def _report_malformed(self, parsed: Parsed, body: bytes) -> None:
        """Log an unusable body once per distinct body (bounded memory)."""
        key = body[:512]
        if key in self._reported:
            return
        if len(self._reported) >= MAX_REMEMBERED_BODIES:
            self._reported.clear()
        self._reported.add(key)
        emit(
            log,
            logging.WARNING,
            "imds-malformed",
            f"{self.name}: {parsed.problem}: {excerpt(body)}",
            monitor=self.name,
        )


class HeldNotice:
    """A notice whose end the signal does not name, so its time is reckoned: first seen +
    `lead`. That time is kept while the signal shows (a re-read is the same notice, not a
    moved one), and across a restart through `adopt`. Used by signals that only say "now"
    (an Auto Scaling `Terminated`, a Google preemption)."""

    def __init__(self, source: Source, wall: Callable[[], float] = time.time) -> None:
        self.source = source
        self._wall = wall
        self._held: Dict[str, Notice] = {}  # action -> the notice while it shows

    def adopt(self, known: Optional[Notice]) -> None:
        if known is not None and known.signal == self.source:
            self._held[known.action] = known

    def showing(self, action: Action, lead: float) -> Notice:
        """The notice for `action`, shown now: the held one, else a new one timed now + lead."""
        held = self._held.get(action)
        if held is None:
            first_seen = datetime.fromtimestamp(int(self._wall()), timezone.utc)
            ends = first_seen + timedelta(seconds=lead)
            held = Notice(action, ends, iso_text(ends), self.source)
            self._held = {action: held}  # one signal, one action at a time
        return held

    def gone(self) -> None:
        """The signal shows nothing now: the next one is timed afresh."""
        self._held.clear()
