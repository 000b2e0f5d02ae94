"""Which load balancers send this instance traffic, and which Auto Scaling group it is in.

Found at start and on reload, on a thread of its own, never on the way from a notice to its
hooks. Each list on its own: `load_balancer.target_groups` when given, else the target
groups of the instance's Auto Scaling group; `load_balancer.classic` when given, else the
group's Classic Load Balancers (DescribeAutoScalingInstances for the group, then
DescribeAutoScalingGroups for its `TargetGroupARNs` and `LoadBalancerNames`).

Whether to ask Auto Scaling at all is decided by IMDS first: `autoscaling/target-lifecycle-
state` answers only on instances in a group, so an instance in none makes no AWS call (and
does not load botocore) for a feature it cannot use.

A discovery that fails for a passing reason (IMDS or AWS errors, throttling) is tried again
with backoff until it succeeds: an IMDS outage at start must not turn deregistration off
until the next reload. A step that needs the answer meanwhile wakes it (no backoff pause
then) and waits for it at most as long as it was told (`load_balancer.wait`).
"""

from __future__ import annotations

import logging
import random
import threading
from dataclasses import dataclass
from typing import Any, List, Optional, Tuple

from spotwatch.clouds.aws.imds import ImdsClient, ImdsError, read_instance_id
from spotwatch.clouds.aws.monitors import lifecycle_state
from spotwatch.config.schema import Config
from spotwatch.logevents import emit
from spotwatch.parts.awsapi.bounded import Bounded, within
from spotwatch.parts.awsapi.clients import AwsClients, api_errors, describe_error

log = logging.getLogger("spotwatch.lb")


@dataclass(frozen=True)
class LoadBalancers:
    """What deregistration works on; `why` says where the lists came from (or why none).
    `passing`: the discovery failed for a passing reason and is tried again (the lists
    are then only those given in the config)."""

    instance_id: Optional[str]
    target_groups: Tuple[str, ...]
    classic: Tuple[str, ...]
    group: Optional[str]  # the instance's Auto Scaling group, when it is in one
    why: str
    passing: bool = False

    @property
    def empty(self) -> bool:
        return not self.target_groups and not self.classic


# Discovery runs at start and on reload, in the background: throttling is retried this long.
DISCOVERY_BOUND = 30.0
# A failed discovery is tried again after this long, doubled each time (jittered: a fleet
# that failed together, throttled by one regional API, does not come back together), up to
# RETRY_MOST; a notice in the meantime wakes it at once.
RETRY_FIRST = 1.0
RETRY_MOST = 60.0


def imds_value(config: Config, path: str) -> Tuple[Optional[str], Optional[str]]:
    """(value, None) for a 200 answer; (None, why) otherwise."""
    client = ImdsClient.for_a_few_reads(config.imds)
    try:
        reply = client.get(path)
    except ImdsError as failure:
        return None, f"IMDS: {failure}"
    finally:
        client.close()
    if reply.status != 200:
        return None, f"IMDS {path} answered HTTP {reply.status}"
    return reply.body.decode("ascii", "replace").strip(), None


def group_of(aws: Bounded, instance_id: str) -> Optional[str]:
    """The Auto Scaling group of this instance (DescribeAutoScalingInstances), or None."""
    answer = aws.autoscaling("describe_auto_scaling_instances", InstanceIds=[instance_id])
    found = answer.get("AutoScalingInstances") or []
    return str(found[0]["AutoScalingGroupName"]) if found else None


def load_balancers_of(aws: Bounded, group: str) -> Tuple[List[str], List[str]]:
    """(target group ARNs, Classic Load Balancer names) of an Auto Scaling group."""
    answer = aws.autoscaling("describe_auto_scaling_groups", AutoScalingGroupNames=[group])
    groups: List[Any] = answer.get("AutoScalingGroups") or []
    if not groups:
        return [], []
    return list(groups[0].get("TargetGroupARNs") or []), list(
        groups[0].get("LoadBalancerNames") or []
    )


def _origin(given: Tuple[Tuple[str, ...], Tuple[str, ...]], group: Optional[str]) -> str:
    """Where the two lists came from, for the log and `check`."""
    parts = []
    for name, listed in (("target groups", given[0]), ("Classic Load Balancers", given[1])):
        parts.append(f"{name} configured" if listed else f"{name} of group {group}")
    return "; ".join(parts) if group else "configured"


def discover(config: Config, clients: AwsClients) -> LoadBalancers:
    """One discovery; never raises for a foreseeable failure (`why` tells it, `passing`
    says it is worth trying again)."""
    settings = config.load_balancer
    given = (tuple(settings.target_groups), tuple(settings.classic))
    # The group is needed for each list not given, and for detach.
    needs_group = not given[0] or not given[1] or config.autoscaling.detach
    client = ImdsClient.for_a_few_reads(config.imds)
    try:
        instance_id, why = read_instance_id(client, client.now() + 2 * config.imds.timeout)
        if instance_id is None:
            return LoadBalancers(None, *given, None, f"no instance id: {why}", needs_group)
        state: Optional[str] = ""
        if needs_group:
            state, why = lifecycle_state(client, 2 * config.imds.timeout)
    finally:
        client.close()
    if state is None:
        why = f"cannot tell whether this instance is in an Auto Scaling group: {why}"
        return LoadBalancers(instance_id, *given, None, why, True)
    if not state:
        why = "configured" if given != ((), ()) else "not in an Auto Scaling group"
        return LoadBalancers(instance_id, *given, None, why)
    try:
        aws = clients.bounded(within(DISCOVERY_BOUND))
        group = group_of(aws, instance_id)
        found = load_balancers_of(aws, group) if group else ([], [])
    except api_errors() as failure:
        why = f"Auto Scaling: {describe_error(failure)}"
        return LoadBalancers(instance_id, *given, None, why, True)
    target_groups = given[0] or tuple(found[0])
    classic = given[1] or tuple(found[1])
    return LoadBalancers(instance_id, target_groups, classic, group, _origin(given, group))


class LoadBalancerDiscovery:
    """Discovery run in the background, tried again until it succeeds; a step waits for its
    answer only so long."""

    def __init__(self, config: Config, clients: AwsClients) -> None:
        self.config = config
        self.clients = clients
        self._done = threading.Event()  # a discovery succeeded
        self._tried = threading.Event()  # the first try ended, however
        self._wake = threading.Event()  # try again now (a step is waiting, or stop)
        self._stopped = threading.Event()  # superseded by a reload's discovery
        self._waiting = 0  # steps waiting for an answer: no backoff while there are any
        self._lock = threading.Lock()  # guards `_waiting`
        self.latest: Optional[LoadBalancers] = None  # the last answer, failed ones too

    @classmethod
    def known(
        cls, config: Config, clients: AwsClients, found: LoadBalancers
    ) -> LoadBalancerDiscovery:
        """A discovery that has already answered (what another process found, a benchmark)."""
        made = cls(config, clients)
        made.latest = found
        made._done.set()
        made._tried.set()
        return made

    def start(self) -> LoadBalancerDiscovery:
        threading.Thread(target=self._run, name="lb-discovery", daemon=True).start()
        return self

    def stop(self) -> None:
        """Try no more (a reload started a discovery of its own)."""
        self._stopped.set()
        self._wake.set()

    def _run(self) -> None:
        pause, tries = RETRY_FIRST, 0
        while not self._stopped.is_set():
            tries += 1
            found = self._once()
            self.latest = found
            self._tried.set()
            if not found.passing:
                self._done.set()
                where = ", ".join(found.target_groups + found.classic) or "none"
                after = f" (after {tries} tries)" if tries > 1 else ""
                said = f"load balancers{after} ({found.why}): {where}"
                emit(log, logging.INFO, "lb-discovered", said)
                return
            if tries == 1:  # once per outage; the success says when it is over
                emit(
                    log,
                    logging.WARNING,
                    "lb-discovery-failed",
                    f"load balancer discovery failed ({found.why}); trying again with backoff "
                    "(a notice meanwhile waits for it at most load_balancer.wait)",
                )
            self._wake.wait(random.uniform(pause / 2, pause))
            self._wake.clear()
            pause = RETRY_FIRST if self._waiting else min(pause * 2, RETRY_MOST)

    def _once(self) -> LoadBalancers:
        try:
            return discover(self.config, self.clients)
        except Exception as failure:  # a bug here must not end the daemon (nor repeat)
            log.exception("load balancer discovery failed")
            return LoadBalancers(None, (), (), None, f"discovery failed: {failure!r}")

    def first_try(self, wait: float) -> None:
        """Wait at most `wait` seconds for the first try to end (the daemon, before its
        first poll: a notice standing at start then finds the answer, not a race)."""
        self._tried.wait(wait)

    def result(self, wait: float = 0.0) -> Optional[LoadBalancers]:
        """The answer, waiting at most `wait` seconds for it (and waking a discovery that
        pauses between tries); None while no discovery has succeeded."""
        if wait > 0 and not self._done.is_set():
            with self._lock:
                self._waiting += 1
            self._wake.set()
            try:
                self._done.wait(wait)
            finally:
                with self._lock:
                    self._waiting -= 1
        return self.latest if self._done.is_set() else None
