"""A local stand-in for Azure's Instance Metadata Service, with the Scheduled Events rules
spotwatch depends on.

- Every request must carry `Metadata: true` and an `api-version` the service knows, and none
  may carry `X-Forwarded-For`: otherwise 400 with Azure's JSON `error`.
- `GET /metadata/scheduledevents` answers `{"DocumentIncarnation": N, "Events": [...]}`; N
  goes up with every change to the list. The very first such request takes
  `first_answer_delay` (the real service turns on at the first request: up to 2 minutes).
- An event is `Scheduled` with a `NotBefore` (`Mon, 19 Sep 2016 18:29:47 GMT`) until it is
  approved (`POST {"StartRequests": [{"EventId": ...}]}`) or its NotBefore passes; then
  `Started`, NotBefore blank; with `complete_after` it leaves the list that long after (no
  `Completed` status exists). `remove_event` is a cancel: the event just leaves the list.
- `instance/compute/name` and `vmId` with `format=text`, and the `instance` document.

Faults, counts and the lifecycle come from simulator/service.py. Standard library only.
"""

import json
import time
import uuid
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional

from spotwatch.simulator.http import Answer, Request
from spotwatch.simulator.service import SimulatedService

PREFIX = "/metadata/"
API_VERSIONS = ("2017-11-01", "2019-01-01", "2019-08-01", "2020-07-01", "2021-02-01")
DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
JSON = "application/json; charset=utf-8"


def rfc1123(moment: datetime) -> str:
    """`Mon, 19 Sep 2016 18:29:47 GMT` (English names whatever the locale)."""
    m = moment.astimezone(timezone.utc)
    return f"{DAYS[m.weekday()]}, {m.day:02d} {MONTHS[m.month - 1]} {m:%Y %H:%M:%S} GMT"


class AzureMetadataSimulator(SimulatedService):
    kind = "azure-imds-simulator"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        delay: float = 0.0,
        verbose: bool = False,
        vm_name: str = "spot-vm-1",
        vm_id: Optional[str] = None,
        first_answer_delay: float = 0.0,
        complete_after: Optional[float] = None,
    ) -> None:
        super().__init__(host, port, delay=delay, verbose=verbose)
        self.vm_name = vm_name
        self.instance_id = vm_id or str(uuid.uuid4())
        self.first_answer_delay = first_answer_delay
        self.complete_after = complete_after
        self.incarnation = 1
        self._events: Dict[str, Dict[str, Any]] = {}
        self._not_before: Dict[str, float] = {}  # EventId -> epoch, while Scheduled
        self._started_at: Dict[str, float] = {}  # EventId -> epoch it started
        self._asked = False  # the first scheduledevents request came
        self.start_requests: List[str] = []  # EventIds approved, in order

    # --- what the service says ---------------------------------------------------------------

    def add_event(
        self,
        event_type: str,
        not_before: datetime,
        *,
        resources: Optional[List[str]] = None,
        event_id: Optional[str] = None,
        source: str = "Platform",
        duration: int = -1,
    ) -> str:
        """List a Scheduled event (for this VM unless `resources` names others)."""
        event_id = event_id or str(uuid.uuid4()).upper()
        with self._lock:
            self._events[event_id] = {
                "EventId": event_id,
                "EventStatus": "Scheduled",
                "EventType": event_type,
                "ResourceType": "VirtualMachine",
                "Resources": list(resources) if resources is not None else [self.vm_name],
                "NotBefore": rfc1123(not_before),
                "Description": f"{event_type} scheduled by the simulator",
                "EventSource": source,
                "DurationInSeconds": duration,
            }
            self._not_before[event_id] = not_before.timestamp()
            self.incarnation += 1
        return event_id

    def remove_event(self, event_id: str) -> None:
        """The event leaves the list (canceled, or done)."""
        with self._lock:
            if self._events.pop(event_id, None) is not None:
                self._not_before.pop(event_id, None)
                self._started_at.pop(event_id, None)
                self.incarnation += 1

    def start_event(self, event_id: str) -> None:
        with self._lock:
            self._start(event_id, time.time())

    def events(self) -> List[Dict[str, Any]]:
        with self._lock:
            self._advance(time.time())
            return [dict(e) for e in self._events.values()]

    # --- answers -----------------------------------------------------------------------------

    def answer(self, request: Request) -> Answer:
        if "x-forwarded-for" in request.headers:
            return _error("Bad request. Requests with X-Forwarded-For are not allowed.")
        if request.headers.get("metadata") != "true":
            return _error("Bad request. Required metadata header not specified")
        version = request.param("api-version")
        if version is None:
            return _error("Bad request. api-version was not specified in the request.")
        if version not in API_VERSIONS:
            return _error("Bad request. api-version is invalid.", newest=list(API_VERSIONS[-3:]))
        if request.path == PREFIX + "scheduledevents":
            if request.method == "POST":
                return self._approve(request.body)
            if request.method == "GET":
                return self._document()
            return 405, b"", JSON, {}
        if request.method != "GET":
            return 405, b"", JSON, {}
        return self._instance(request.path[len(PREFIX) :], request.param("format") == "text")

    def _document(self) -> Answer:
        with self._lock:
            first, self._asked = not self._asked, True
        if first and self.first_answer_delay > 0:
            self._stopping.wait(self.first_answer_delay)
        with self._lock:
            self._advance(time.time())
            body = {"DocumentIncarnation": self.incarnation, "Events": list(self._events.values())}
        return 200, json.dumps(body).encode(), JSON, {}

    def _approve(self, body: bytes) -> Answer:
        try:
            requests = json.loads(body.decode("utf-8"))["StartRequests"]
            ids = [str(entry["EventId"]) for entry in requests]
        except (UnicodeDecodeError, ValueError, KeyError, TypeError):
            return _error('Bad request. The body must be {"StartRequests": [{"EventId": ...}]}')
        now = time.time()
        with self._lock:
            for event_id in ids:
                self.start_requests.append(event_id)
                self._start(event_id, now)
        return 200, b"", JSON, {}

    def _start(self, event_id: str, now: float) -> None:
        """Lock held: Scheduled -> Started (NotBefore blank)."""
        event = self._events.get(event_id)
        if event is None or event["EventStatus"] == "Started":
            return
        event["EventStatus"], event["NotBefore"] = "Started", ""
        self._not_before.pop(event_id, None)
        self._started_at[event_id] = now
        self.incarnation += 1

    def _advance(self, now: float) -> None:
        """Lock held: events whose NotBefore passed start; started ones complete."""
        for event_id, moment in list(self._not_before.items()):
            if now >= moment:
                self._start(event_id, now)
        if self.complete_after is None:
            return
        for event_id, began in list(self._started_at.items()):
            if now >= began + self.complete_after:
                del self._events[event_id], self._started_at[event_id]
                self.incarnation += 1

    def _instance(self, path: str, as_text: bool) -> Answer:
        compute = {
            "name": self.vm_name,
            "vmId": self.instance_id,
            "location": "westeurope",
            "priority": "Spot",
            "vmSize": "Standard_D2s_v5",
        }
        if path.startswith("instance/compute/"):
            value = compute.get(path[len("instance/compute/") :])
            if value is None:
                return 404, b"", JSON, {}
            if as_text:
                return 200, value.encode(), "text/plain; charset=utf-8", {}
            return 200, json.dumps(value).encode(), JSON, {}
        if path in ("instance", "instance/compute"):
            data = compute if path.endswith("compute") else {"compute": compute}
            return 200, json.dumps(data).encode(), JSON, {}
        return 404, b"", JSON, {}


def _error(message: str, **extra: Any) -> Answer:
    return 400, json.dumps({"error": message, **extra}).encode(), JSON, {}
