"""A local stand-in for Google's metadata server, with the rules spotwatch depends on.

- Every request must carry `Metadata-Flavor: Google` (else 403), none may carry
  `X-Forwarded-For` (403), and every answer carries `Metadata-Flavor: Google` back (unless
  `foreign` is set: a stand-in that is not the metadata server, which clients must not
  believe).
- Each value has an ETag (a hash of its path and text: the same text, the same ETag).
- `?wait_for_change=true` hangs: with `last_etag=E` until the value's ETag differs from E
  (at once if it already does), without it until the next change; at most `timeout_sec`
  seconds (then the value as it is), and never past a stop.
- Paths under /computeMetadata/v1/ (`instance/preempted` FALSE, `instance/maintenance-event`
  NONE, `instance/id`, `instance/name`, `instance/zone`, ...); a folder lists its children.

Faults, counts and the lifecycle come from simulator/service.py (a 503 burst is
`inject_status(503, count=N)`). Standard library only, like every simulator.
"""

import collections
import hashlib
import threading
import time
from typing import Dict, List, Optional

from spotwatch.simulator.http import Answer, Request, phrase
from spotwatch.simulator.service import SimulatedService

PREFIX = "/computeMetadata/v1/"
PREEMPTED = "instance/preempted"
MAINTENANCE_EVENT = "instance/maintenance-event"
MAX_WAIT = 3600.0  # a hanging GET without timeout_sec
FLAVOR = {"Metadata-Flavor": "Google"}


class GcpMetadataSimulator(SimulatedService):
    kind = "gcp-metadata-simulator"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        delay: float = 0.0,
        verbose: bool = False,
        instance_id: str = "4520031799277581759",
        name: str = "spot-vm-1",
        zone: str = "us-central1-a",
    ) -> None:
        super().__init__(host, port, delay=delay, verbose=verbose)
        self.instance_id = instance_id
        self.name = name
        self.foreign = False  # answer without Metadata-Flavor (not Google's server)
        # Refuse wait_for_change (400), as a proxy in front of the server that does not hold
        # requests would: clients must fall back to plain reads.
        self.refuse_waits = False
        self._changed = threading.Condition(self._lock)
        self._values: Dict[str, str] = {
            "instance/id": instance_id,
            "instance/name": name,
            "instance/hostname": f"{name}.{zone}.c.project.internal",
            "instance/zone": f"projects/123456789012/zones/{zone}",
            "instance/scheduling/preemptible": "TRUE",
            PREEMPTED: "FALSE",
            MAINTENANCE_EVENT: "NONE",
            "project/project-id": "project",
        }
        self.hanging = 0  # hanging GETs waiting right now
        # Hanging GETs answered, by path (a plain read of a path is count(path=...) - this).
        self.waited: collections.Counter[str] = collections.Counter()

    # --- what the server says ----------------------------------------------------------------

    def set_value(self, path: str, value: str) -> None:
        with self._changed:
            self._values[path] = value
            self._changed.notify_all()

    def value(self, path: str) -> Optional[str]:
        with self._lock:
            return self._values.get(path)

    def preempt(self) -> None:
        """The VM is being preempted: `instance/preempted` turns TRUE."""
        self.set_value(PREEMPTED, "TRUE")

    def set_maintenance_event(self, value: str) -> None:
        """NONE, MIGRATE_ON_HOST_MAINTENANCE or TERMINATE_ON_HOST_MAINTENANCE."""
        self.set_value(MAINTENANCE_EVENT, value)

    def etag(self, path: str) -> str:
        with self._lock:
            return self._etag(path)

    def stopping(self) -> None:
        with self._changed:
            self._changed.notify_all()

    # --- answers -----------------------------------------------------------------------------

    def answer(self, request: Request) -> Answer:
        flavor = {} if self.foreign else FLAVOR
        if request.method != "GET":
            return _text(405, flavor)
        if "x-forwarded-for" in request.headers:
            return _text(403, flavor, "Request forbidden: X-Forwarded-For is not allowed.")
        if request.headers.get("metadata-flavor") != "Google":
            return _text(403, flavor, "Missing Metadata-Flavor:Google header.")
        if not request.path.startswith(PREFIX):
            return _text(404, flavor)
        key = request.path[len(PREFIX) :]
        with self._changed:
            if self._body(key) is None:
                return _text(404, flavor)
            if request.param("wait_for_change") == "true":
                if self.refuse_waits:
                    return _text(400, flavor, "wait_for_change is not served here")
                problem = self._hang(key, request)
                if problem is not None:
                    return _text(400, flavor, problem)
                self.waited[request.path] += 1
            body = self._body(key)
            if body is None:
                return _text(404, flavor)
            headers = {**flavor, "ETag": self._etag(key), "Server": "Metadata Server for VM"}
        return 200, body.encode(), "application/text", headers

    def _hang(self, key: str, request: Request) -> Optional[str]:
        """Wait (lock held, released while waiting) until the value changes from the ETag
        given (or from now), the timeout, or a stop; a problem with the query, or None."""
        try:
            timeout = float(request.param("timeout_sec") or MAX_WAIT)
        except ValueError:
            return "timeout_sec must be a number of seconds"
        last = request.param("last_etag") or self._etag(key)
        end = time.monotonic() + min(max(timeout, 0.0), MAX_WAIT)
        self.hanging += 1
        try:
            while self._etag(key) == last and not self._stopping.is_set():
                left = end - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
        finally:
            self.hanging -= 1
        return None

    def _body(self, key: str) -> Optional[str]:
        if key in self._values:
            return self._values[key]
        folder = key if key.endswith("/") or not key else key + "/"
        children: List[str] = sorted(
            {
                path[len(folder) :].split("/", 1)[0] + ("/" if "/" in path[len(folder) :] else "")
                for path in self._values
                if path.startswith(folder)
            }
        )
        return "\n".join(children) + "\n" if children else None

    def _etag(self, key: str) -> str:
        body = self._body(key) or ""
        return hashlib.sha256(f"{key}\0{body}".encode()).hexdigest()[:16]


def _text(status: int, headers: Dict[str, str], text: Optional[str] = None) -> Answer:
    return status, (text or phrase(status).decode()).encode(), "text/html", dict(headers)
