"""The world the real daemon meets on Google Cloud and Azure in a played sequence.

- `RecordingGcp`: Google's metadata simulator (real HTTP, hanging GETs, ETags), noting every
  answer it gives for `instance/preempted` and `instance/maintenance-event` (plain reads and
  hanging GETs alike: the daemon's poll sees what the last of them said), and every request
  that is not a GET (the daemon never writes there).
- `RecordingAzure`: Azure's metadata simulator (Scheduled Events), noting every answer to the
  events list, every StartRequests POST, and when each event started; events can be moved
  (a new NotBefore) as the platform does.
- `AwsForbidden`: where the AWS API and the AWS instance metadata service would be. On these
  clouds nothing may ask either (§10), so every request it gets is recorded as a finding.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime
from typing import Any, Dict, List, Tuple

from testkit import QuietHandler, serve_in_thread

from spotwatch.clouds.azure.simulator import AzureMetadataSimulator, rfc1123
from spotwatch.clouds.gcp.simulator import PREFIX, GcpMetadataSimulator
from spotwatch.simulator.http import Answer, Request

GCP_WATCHED = ("instance/preempted", "instance/maintenance-event")
AZURE_EVENTS = "/metadata/scheduledevents"

GcpRaw = Tuple[float, str, int, bytes]  # (wall, value name, status, body)
AzureRaw = Tuple[float, int, bytes]  # (wall, status, body)


class RecordingGcp(GcpMetadataSimulator):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.answers: List[GcpRaw] = []
        self.writes: List[Tuple[float, str, str]] = []  # (wall, method, path): none expected
        self._notes = threading.Lock()

    def answer(self, request: Request) -> Answer:
        found = super().answer(request)
        key = request.path[len(PREFIX) :]
        with self._notes:
            if request.method != "GET":
                self.writes.append((time.time(), request.method, request.path))
            elif key in GCP_WATCHED:
                name = key.rsplit("/", 1)[-1]
                self.answers.append((time.time(), name, found[0], found[1]))
        return found


class RecordingAzure(AzureMetadataSimulator):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.answers: List[AzureRaw] = []
        self.approvals: List[Tuple[float, bytes]] = []  # StartRequests POSTs, as sent
        self.started_when: Dict[str, float] = {}  # EventId -> when it turned Started
        self._notes = threading.Lock()

    def answer(self, request: Request) -> Answer:
        found = super().answer(request)
        if request.path == AZURE_EVENTS:
            with self._notes:
                if request.method == "GET":
                    self.answers.append((time.time(), found[0], found[1]))
                else:
                    self.approvals.append((time.time(), request.body))
        return found

    def _start(self, event_id: str, now: float) -> None:
        super()._start(event_id, now)
        if event_id in self._events:
            self.started_when.setdefault(event_id, now)

    def move_event(self, event_id: str, not_before: datetime) -> bool:
        """The platform moves a Scheduled event's NotBefore (the list's incarnation goes up)."""
        with self._lock:
            event = self._events.get(event_id)
            if event is None or event["EventStatus"] != "Scheduled":
                return False
            event["NotBefore"] = rfc1123(not_before)
            self._not_before[event_id] = not_before.timestamp()
            self.incarnation += 1
            return True

    def listed(self) -> List[str]:
        return [event["EventId"] for event in self.events()]

    def not_before(self, event_id: str) -> float:
        """A Scheduled event's NotBefore (epoch); 0 once it started or left the list."""
        with self._lock:
            return self._not_before.get(event_id, 0.0)


class AwsForbidden:
    """Records every request (any method, any path) and refuses it: nothing may come here."""

    def __init__(self) -> None:
        self.requests: List[Tuple[float, str, str]] = []
        self._lock = threading.Lock()
        recorder = self

        class Handler(QuietHandler):
            def _any(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with recorder._lock:
                    recorder.requests.append((time.time(), self.command, self.path))
                self.reply(403, b"not on this cloud", "text/plain")

            do_GET = do_PUT = do_POST = _any

        self._server, self.url = serve_in_thread(Handler)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
