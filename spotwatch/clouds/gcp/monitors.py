"""Google's two signals, each a `Monitor` (detection/monitors.py):

- `instance/preempted` turns `TRUE`: the Spot or preemptible VM is being preempted. The VM is
  gone `gcp.notice` after (30 s; 150 s with a 120 s preemption notice duration). A `terminate`
  notice, source `gcp-preempted`; a `TRUE` already there at start is a notice too.
- `instance/maintenance-event` turns `TERMINATE_ON_HOST_MAINTENANCE` (a `stop`) or
  `MIGRATE_ON_HOST_MAINTENANCE` (a `maintenance`), 60 s ahead; back to `NONE` after.

Neither names a moment, so each notice's time is when it was first seen plus that lead
(`HeldNotice`: kept while it shows and across a restart). With `poll_interval` of a second or
more, each value is also followed by a hanging GET on a thread of its own (clouds/gcp/watch.py)
with `timeout_sec` = `poll_interval` in whole seconds: a change wakes the poll loop at once,
and while the watch vouches for the value the poll asks nothing. Otherwise, or while the
watch fails, the poll reads the value itself.
"""

from __future__ import annotations

import time
from typing import Callable, Dict, List, Optional, Tuple

from spotwatch.clouds.gcp.metadata import GcpClient
from spotwatch.clouds.gcp.watch import ValueWatch
from spotwatch.config.schema import Config
from spotwatch.detection.monitors import HeldNotice, Monitor, Reading, seen
from spotwatch.detection.notices import Action, Notice, Parsed, Source

PREEMPTED = "instance/preempted"
MAINTENANCE_EVENT = "instance/maintenance-event"
SOURCE_PREEMPTED = Source("gcp-preempted")
SOURCE_MAINTENANCE = Source("gcp-maintenance-event")
MAINTENANCE_LEAD = 60.0  # the maintenance event changes this long before the host's maintenance

MakeClient = Callable[[], GcpClient]


class ValueMonitor(Monitor):
    """One metadata value whose text means a notice (or none)."""

    path = ""
    source = SOURCE_PREEMPTED
    # value -> (action, seconds from first seen to the VM's end); a value absent from here
    # and from `QUIET` is unusable.
    MEANINGS: Dict[str, Tuple[Action, float]] = {}
    QUIET: Tuple[str, ...] = ()

    def __init__(
        self,
        client: GcpClient,
        make_client: MakeClient,
        poll_interval: float,
        wall: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(client)
        self._make_client = make_client
        self._interval = poll_interval
        self._held = HeldNotice(self.source, wall)
        self.watch: Optional[ValueWatch] = None

    def adopt(self, known: Optional[Notice]) -> None:
        self._held.adopt(known)

    def attach(self, wake: Callable[[], None]) -> None:
        if self._interval < 1 or self.watch is not None:
            return  # polled at least every second anyway
        self.watch = ValueWatch(
            self._make_client(), self.path, int(self._interval), wake, retry=self._interval
        )
        self.watch.start()

    def close(self) -> None:
        if self.watch is not None:
            self.watch.stop()
            self.watch = None

    def check(self, deadline: float) -> Reading:
        value = self.watch.current() if self.watch is not None else None
        if value is None:
            reply, error = self._fetch(self.path, deadline)
            if reply is None:
                return Reading(ok=False, error=f"{self.name}: {error}")
            if reply.status != 200:
                return Reading(
                    ok=False, error=f"{self.name}: {self.path} answered HTTP {reply.status}"
                )
            value = reply.body.decode("utf-8", "replace").strip()
        return self._reading(value)

    def _reading(self, value: str) -> Reading:
        meaning = self.MEANINGS.get(value)
        if meaning is not None:
            return seen(self._held.showing(*meaning))
        if value in self.QUIET:
            self._held.gone()
            return Reading(ok=True)
        # Not a notice, but no evidence either: a known notice is neither seen nor gone.
        self._report_malformed(Parsed(problem=f"unknown value of {self.path}"), value.encode())
        return Reading(ok=True, speaks_for=frozenset())


class PreemptedMonitor(ValueMonitor):
    name = "preempted"
    decides_result = True
    path = PREEMPTED
    source = SOURCE_PREEMPTED
    QUIET = ("FALSE",)

    def __init__(self, client: GcpClient, make_client: MakeClient, config: Config) -> None:
        self.MEANINGS = {"TRUE": ("terminate", config.gcp.notice)}
        super().__init__(client, make_client, config.poll_interval)


class MaintenanceMonitor(ValueMonitor):
    name = "maintenance-event"
    path = MAINTENANCE_EVENT
    source = SOURCE_MAINTENANCE
    MEANINGS = {
        "TERMINATE_ON_HOST_MAINTENANCE": ("stop", MAINTENANCE_LEAD),
        "MIGRATE_ON_HOST_MAINTENANCE": ("maintenance", MAINTENANCE_LEAD),
    }
    QUIET = ("NONE",)

    def __init__(self, client: GcpClient, make_client: MakeClient, config: Config) -> None:
        super().__init__(client, make_client, config.poll_interval)


def monitors_for(config: Config, client: GcpClient, make_client: MakeClient) -> List[Monitor]:
    """The preemption first: its answer decides the poll's result."""
    return [
        PreemptedMonitor(client, make_client, config),
        MaintenanceMonitor(client, make_client, config),
    ]
