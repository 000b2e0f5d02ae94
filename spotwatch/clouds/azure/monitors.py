"""Azure Scheduled Events as notices: one per event for this VM, a scheduled event each (its
response waits for NotBefore - `scheduled_events.lead` and is canceled when the event
leaves the list before its NotBefore: daemon/scheduled.py).

- Read every poll (Microsoft suggests every second; `poll_interval` decides).
- Only events whose `Resources` hold this VM's name (`compute/name`, read once) count: a
  scale set's placement group shares the list, and another VM's event is not ours.
- A notice's time is its `NotBefore`. A `Started` event (NotBefore blank) is happening now:
  its time is the earlier of the NotBefore it had and the moment it was first seen started.
- The service turns on at the first request, whose answer may take up to two minutes. That
  first request runs on a thread of its own (`attach`), so the daemon starts meanwhile and
  says so: until it answers, a poll is `degraded` and vouches for no event.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timezone
from typing import Callable, Dict, Optional

from spotwatch.clouds.azure.events import SOURCE, AzureEvent, parse_document
from spotwatch.clouds.azure.metadata import SCHEDULED_EVENTS, VM_NAME, AzureClient
from spotwatch.detection.metadata import MetadataError
from spotwatch.detection.monitors import Monitor, Reading
from spotwatch.detection.notices import Notice, Parsed, iso_text
from spotwatch.logevents import emit

log = logging.getLogger("spotwatch.watcher")

FIRST_ANSWER_WAIT = 180.0  # the first answer may take up to 2 minutes
# A poll waits this long (at most, within its own budget) for the first answer before it
# reports "still waiting": on a VM where the service is already on, it comes in milliseconds.
FIRST_ANSWER_GRACE = 1.0
WAITING = "waiting for Scheduled Events' first answer (it may take up to 2 minutes)"


class AzureEventsMonitor(Monitor):
    name = "azure-events"
    decides_result = True
    scheduled = True

    def __init__(
        self,
        client: AzureClient,
        make_client: Callable[[], AzureClient],
        *,
        wall: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(client)
        self._make_client = make_client
        self._wall = wall
        self.vm_name: Optional[str] = None
        self._times: Dict[str, datetime] = {}  # EventId -> its NotBefore, as last known
        self._started: Dict[str, datetime] = {}  # EventId -> first seen Started
        self._first: Optional[threading.Thread] = None
        self._answered = threading.Event()  # the first request has ended
        self._first_client: Optional[AzureClient] = None

    def adopt(self, known: Optional[Notice]) -> None:
        if known is not None and known.signal == SOURCE and known.event_id:
            self._times[known.event_id] = known.time

    def attach(self, wake: Callable[[], None]) -> None:
        if self._first is not None:
            return
        self._first_client = self._make_client()
        self._first = threading.Thread(
            target=self._ask_first, args=(self._first_client, wake), name="azure-first", daemon=True
        )
        self._first.start()

    def close(self) -> None:
        if self._first_client is not None:
            self._first_client.abort()

    def _ask_first(self, client: AzureClient, wake: Callable[[], None]) -> None:
        started = time.monotonic()
        try:
            client.get(SCHEDULED_EVENTS, deadline=started + FIRST_ANSWER_WAIT)
        except MetadataError:
            pass  # the polls say what fails from here on
        finally:
            client.close()
            self._answered.set()
        took = time.monotonic() - started
        if took > FIRST_ANSWER_GRACE:
            emit(
                log,
                logging.INFO,
                "azure-events-on",
                f"Scheduled Events answered after {took:.0f} s",
            )
        wake()

    # ----------------------------------------------------------------- a poll

    def check(self, deadline: float) -> Reading:
        if self._first is not None and not self._answered.is_set():
            grace = min(FIRST_ANSWER_GRACE, max(0.0, deadline - self.client.now()) / 2)
            if not self._answered.wait(grace):
                return Reading(ok=True, speaks_for=frozenset(), degraded=WAITING)
        if self.vm_name is None:
            self.vm_name, why = self.client.read_text(VM_NAME, deadline)
            if self.vm_name is None:
                return Reading(ok=False, error=f"{self.name}: this VM's name is unknown: {why}")
        reply, error = self._fetch(SCHEDULED_EVENTS, deadline)
        if reply is None:
            return Reading(ok=False, error=f"{self.name}: {error}")
        if reply.status != 200:
            why = f"scheduledevents answered HTTP {reply.status}"
            return Reading(ok=False, error=f"{self.name}: {why}")
        document, problem = parse_document(reply.body)
        if document is None:
            self._report_malformed(Parsed(problem=problem), reply.body)
            return Reading(ok=True, speaks_for=frozenset())  # no evidence either way
        ours = [e for e in document.events if e.concerns(self.vm_name)]
        listed = {e.event_id for e in ours}
        self._times = {k: v for k, v in self._times.items() if k in listed}
        self._started = {k: v for k, v in self._started.items() if k in listed}
        return self._events(tuple(self._notice(e) for e in ours), document.problems)

    def _notice(self, event: AzureEvent) -> Notice:
        if event.not_before is not None:
            self._times[event.event_id] = event.not_before
        when = self._times.get(event.event_id)
        if event.started:
            now = datetime.fromtimestamp(int(self._wall()), timezone.utc)
            began = self._started.setdefault(event.event_id, now)
            when = began if when is None else min(when, began)
        assert when is not None  # a Scheduled event always has its NotBefore (events.py)
        return Notice(event.action, when, iso_text(when), SOURCE, event.event_id, event.event_type)
