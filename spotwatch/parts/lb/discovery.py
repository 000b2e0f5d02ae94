"""Which load balancers send this instance traffic, and which Auto Scaling group it is in.

Found at start and on reload, on a thread of its own, never on the way from a notice to its
hooks: `load_balancer.target_groups` and `load_balancer.classic` when given, else those of
the instance's Auto Scaling group (DescribeAutoScalingInstances for the group, then
DescribeAutoScalingGroups for its `TargetGroupARNs` and `LoadBalancerNames`).

Whether to ask Auto Scaling at all is decided by IMDS first: `autoscaling/target-lifecycle-
state` answers only on instances in a group, so an instance in none makes no AWS call (and
does not load botocore) for a feature it cannot use.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, List, Optional, Tuple

from spotwatch.clouds.aws.imds import ImdsClient, ImdsError
from spotwatch.clouds.aws.monitors import TARGET_LIFECYCLE_STATE
from spotwatch.config.schema import Config
from spotwatch.logevents import emit
from spotwatch.parts.awsapi.bounded import Bounded, within
from spotwatch.parts.awsapi.clients import AwsClients, api_errors, describe_error

log = logging.getLogger("spotwatch.lb")

INSTANCE_ID_PATH = "meta-data/instance-id"


@dataclass(frozen=True)
class LoadBalancers:
    """What deregistration works on; `why` says where the lists came from (or why none)."""

    instance_id: Optional[str]
    target_groups: Tuple[str, ...]
    classic: Tuple[str, ...]
    group: Optional[str]  # the instance's Auto Scaling group, when it is in one
    why: str

    @property
    def empty(self) -> bool:
        return not self.target_groups and not self.classic


# Discovery runs at start and on reload, in the background: throttling is retried this long.
DISCOVERY_BOUND = 30.0


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


def discover(config: Config, clients: AwsClients) -> LoadBalancers:
    """One discovery; never raises for a foreseeable failure (`why` tells it)."""
    settings = config.load_balancer
    given = (tuple(settings.target_groups), tuple(settings.classic))
    instance_id, why = imds_value(config, INSTANCE_ID_PATH)
    if instance_id is None:
        return LoadBalancers(None, *given, None, f"no instance id: {why}")
    state, _ = imds_value(config, TARGET_LIFECYCLE_STATE)
    if state is None:
        why = "configured" if given != ((), ()) else "not in an Auto Scaling group"
        return LoadBalancers(instance_id, *given, None, why)
    try:
        aws = clients.bounded(within(DISCOVERY_BOUND))
        group = group_of(aws, instance_id)
        found = load_balancers_of(aws, group) if group else ([], [])
    except api_errors() as failure:
        return LoadBalancers(instance_id, *given, None, f"Auto Scaling: {describe_error(failure)}")
    if given != ((), ()):
        return LoadBalancers(instance_id, *given, group, "configured")
    return LoadBalancers(
        instance_id, tuple(found[0]), tuple(found[1]), group, f"Auto Scaling group {group}"
    )


class LoadBalancerDiscovery:
    """Discovery run in the background; a step waits for its answer only so long."""

    def __init__(self, config: Config, clients: AwsClients) -> None:
        self.config = config
        self.clients = clients
        self._done = threading.Event()
        self._found: Optional[LoadBalancers] = None

    @classmethod
    def known(
        cls, config: Config, clients: AwsClients, found: LoadBalancers
    ) -> LoadBalancerDiscovery:
        """A discovery that has already answered (what another process found, a benchmark)."""
        made = cls(config, clients)
        made._found = found
        made._done.set()
        return made

    def start(self) -> LoadBalancerDiscovery:
        threading.Thread(target=self._run, name="lb-discovery", daemon=True).start()
        return self

    def _run(self) -> None:
        try:
            found = discover(self.config, self.clients)
        except Exception as failure:  # a bug here must not end the daemon
            log.exception("load balancer discovery failed")
            found = LoadBalancers(None, (), (), None, f"discovery failed: {failure!r}")
        self._found = found
        self._done.set()
        where = ", ".join(found.target_groups + found.classic) or "none"
        emit(log, logging.INFO, "lb-discovered", f"load balancers ({found.why}): {where}")

    def result(self, wait: float = 0.0) -> Optional[LoadBalancers]:
        """The answer, waiting at most `wait` seconds for it; None while it is not known."""
        self._done.wait(max(0.0, wait))
        return self._found
