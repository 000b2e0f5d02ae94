"""AWS's monitors: one per IMDS signal, behind the `Monitor` interface (detection/monitors.py).

The Spot notice (spot/instance-action, falling back to spot/termination-time), the rebalance
recommendation, the Auto Scaling target lifecycle state and the scheduled events (parsed in
clouds/aws/scheduled.py). `monitors_for` lists those the config asks to watch.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from typing import Callable, FrozenSet, List, Optional, Tuple

from spotwatch.clouds.aws.imds import ImdsClient, ImdsError
from spotwatch.clouds.aws.scheduled import SCHEDULED, parse_scheduled
from spotwatch.config.schema import Config
from spotwatch.detection.monitors import HeldNotice, Monitor, Reading, seen
from spotwatch.detection.notices import (
    SOURCE_TARGET_LIFECYCLE_STATE,
    Notice,
    Parsed,
    parse_instance_action,
    parse_rebalance,
    parse_termination_time,
)
from spotwatch.logevents import emit

log = logging.getLogger("spotwatch.watcher")

INSTANCE_ACTION = "meta-data/spot/instance-action"
TERMINATION_TIME = "meta-data/spot/termination-time"
REBALANCE = "meta-data/events/recommendations/rebalance"
TARGET_LIFECYCLE_STATE = "meta-data/autoscaling/target-lifecycle-state"

# EC2 leaves an old termination-time in place when a termination fails (docs/aws-facts.md). A time
# this far in the past is that leftover, not a warning about the future.
STALE_TERMINATION_TIME = 600.0

# spot/termination-time only ever shows terminate notices: when it stands in for an unusable
# instance-action, its "none" is no evidence that a stop or hibernate notice went away.
FALLBACK_SPEAKS_FOR: FrozenSet[str] = frozenset({"terminate"})


class SpotMonitor(Monitor):
    """spot/instance-action, falling back to spot/termination-time."""

    name = "spot"
    decides_result = True

    def __init__(self, client: ImdsClient, wall: Callable[[], float] = time.time) -> None:
        super().__init__(client)
        self._wall = wall

    def check(self, deadline: float) -> Reading:
        # Retries of instance-action may use only the first half of the time left: the
        # fallback must still have time to ask termination-time in this poll.
        now = self.client.now()
        reply, error = self._fetch(INSTANCE_ACTION, now + max(0.0, deadline - now) / 2)
        if reply is not None:
            if reply.status == 404:
                return Reading(ok=True)
            if reply.status == 200:
                parsed = parse_instance_action(reply.body)
                if parsed.usable:
                    return seen(parsed.notice)
                self._report_malformed(parsed, reply.body)
                error = f"instance-action: {parsed.problem}"
            else:
                error = f"instance-action answered HTTP {reply.status}"
        return self._fall_back(deadline, error or "instance-action gave no answer")

    def _fall_back(self, deadline: float, why: str) -> Reading:
        reply, error = self._fetch(TERMINATION_TIME, deadline)
        if reply is None:
            return Reading(ok=False, error=f"{why}; termination-time: {error}")
        # termination-time answered, but it cannot show stop or hibernate notices.
        degraded = (
            f"{why}; termination-time answered in its place (stop and hibernate notices "
            "cannot be seen)"
        )
        if reply.status == 404:
            return Reading(ok=True, speaks_for=FALLBACK_SPEAKS_FOR, degraded=degraded)
        if reply.status != 200:
            return Reading(ok=False, error=f"{why}; termination-time answered HTTP {reply.status}")
        notice = parse_termination_time(reply.body).notice
        if notice is not None and notice.epoch < self._wall() - STALE_TERMINATION_TIME:
            stale_at = datetime.fromtimestamp(notice.epoch, timezone.utc).isoformat()
            emit(log, logging.DEBUG, "stale-termination-time", f"ignoring old time {stale_at}")
            notice = None
        return seen(notice, speaks_for=FALLBACK_SPEAKS_FOR, degraded=degraded)


class RebalanceMonitor(Monitor):
    """events/recommendations/rebalance: an earlier, softer signal."""

    name = "rebalance"

    def check(self, deadline: float) -> Reading:
        reply, error = self._fetch(REBALANCE, deadline)
        if reply is None:
            return Reading(ok=False, error=f"rebalance: {error}")
        if reply.status == 404:
            return Reading(ok=True)
        if reply.status != 200:
            return Reading(ok=False, error=f"rebalance answered HTTP {reply.status}")
        parsed = parse_rebalance(reply.body)
        if not parsed.usable:
            # Not a notice, but no evidence either: it must not count as the absence of a
            # known recommendation, or a garbled body would make it new again.
            self._report_malformed(parsed, reply.body)
            return Reading(ok=True, speaks_for=frozenset())
        return seen(parsed.notice)


class AutoscalingMonitor(Monitor):
    """autoscaling/target-lifecycle-state: `Terminated` while the Auto Scaling group ends the
    instance. IMDS names no moment, so the notice's time is when it was first seen plus
    `autoscaling.budget` (the one deadline rule then holds); that time is kept, also across
    a restart (`adopt`), so a re-read `Terminated` is the same notice. 404: the instance is
    in no group, which is no news and no error."""

    name = "autoscaling"

    def __init__(
        self, client: ImdsClient, budget: float, wall: Callable[[], float] = time.time
    ) -> None:
        super().__init__(client)
        self.budget = budget
        self._terminating = HeldNotice(SOURCE_TARGET_LIFECYCLE_STATE, wall)

    def adopt(self, known: Optional[Notice]) -> None:
        self._terminating.adopt(known)

    def check(self, deadline: float) -> Reading:
        reply, error = self._fetch(TARGET_LIFECYCLE_STATE, deadline)
        if reply is None:
            return Reading(ok=False, error=f"target-lifecycle-state: {error}")
        if reply.status == 404:
            return Reading(ok=True)
        if reply.status != 200:
            return Reading(ok=False, error=f"target-lifecycle-state answered HTTP {reply.status}")
        state = reply.body.decode("utf-8", "replace").strip()
        if state != "Terminated":
            self._terminating.gone()  # InService, Warmed:*, Detached...: nothing ends it
            return Reading(ok=True)
        return seen(self._terminating.showing("terminate", self.budget))


def lifecycle_state(client: ImdsClient, timeout: float) -> Tuple[Optional[str], str]:
    """IMDS target-lifecycle-state, which answers only on instances in an Auto Scaling
    group: (its state, "") in one; ("", "") in none (404); (None, why) when IMDS cannot say
    now (an error is no answer: it says nothing about the group)."""
    try:
        reply = client.get(TARGET_LIFECYCLE_STATE, deadline=client.now() + timeout)
    except ImdsError as failure:
        return None, f"IMDS: {failure}"
    if reply.status == 404:
        return "", ""
    return reply.body.decode("ascii", "replace").strip()[:40] or f"HTTP {reply.status}", ""


def autoscaling_answers(client: ImdsClient, timeout: float) -> bool:
    """`autoscaling.enabled: auto`: is this instance in a group? (an IMDS that cannot be
    asked right now counts as yes: better one request per poll than a missed termination)"""
    return lifecycle_state(client, timeout)[0] != ""


class ScheduledEventsMonitor(Monitor):
    """events/maintenance/scheduled, every `scheduled_events.poll_interval`: one notice per
    event (clouds/aws/scheduled.py); 404 means none, as `[]` does."""

    name = "scheduled"
    scheduled = True

    def __init__(self, client: ImdsClient, cadence: float) -> None:
        super().__init__(client)
        self.cadence = cadence

    def check(self, deadline: float) -> Reading:
        reply, error = self._fetch(SCHEDULED, deadline)
        if reply is None:
            return Reading(ok=False, error=f"scheduled: {error}")
        if reply.status == 404:
            return Reading(ok=True)
        if reply.status != 200:
            return Reading(ok=False, error=f"scheduled: events answered HTTP {reply.status}")
        events, problem = parse_scheduled(reply.body)
        if events is None:
            self._report_malformed(Parsed(problem=problem), reply.body)
            return Reading(ok=True, speaks_for=frozenset())  # no evidence either way
        return self._events(events.notices, events.problems)


def monitors_for(config: Config, client: ImdsClient) -> List[Monitor]:
    """Every signal the config asks to watch, in the order they are asked each poll (the
    Spot notice first: its answer decides the poll's result)."""
    monitors: List[Monitor] = [SpotMonitor(client)]
    if config.rebalance.enabled:
        monitors.append(RebalanceMonitor(client))
    watch_asg = config.autoscaling.enabled
    if watch_asg == "auto":
        watch_asg = autoscaling_answers(client, 2 * config.imds.timeout)
    if watch_asg:
        monitors.append(AutoscalingMonitor(client, config.autoscaling.budget))
    if config.scheduled_events.enabled:
        monitors.append(ScheduledEventsMonitor(client, config.scheduled_events.poll_interval))
    return monitors
