"""`check` preflights for load balancer deregistration and Auto Scaling detach.

What would be used (the target groups and Classic Load Balancers, this instance's ports in
each), each one's deregistration delay against the time a Spot notice leaves, and the
permissions: every Describe call made here is one the response makes, so its answer proves
that read permission. The mutating calls (DeregisterTargets, DeregisterInstancesFromLoad-
Balancer, DetachInstances, and RegisterTargets / RegisterInstancesWithLoadBalancer on a
cancel) cannot be tried without doing them: Elastic Load Balancing and Auto Scaling have no
DryRun, so `check` says so rather than guess.
"""

from __future__ import annotations

from typing import Iterable, List

from spotwatch.commands.results import ERROR, OK, WARNING, CheckResult
from spotwatch.config.schema import Config
from spotwatch.daemon.wiring import aws_clients
from spotwatch.parts.awsapi.bounded import within
from spotwatch.parts.awsapi.clients import AwsClients, api_errors, describe_error
from spotwatch.parts.lb.discovery import LoadBalancers, discover
from spotwatch.parts.lb.targets import registered_ports, short_group

SPOT_WARNING = 120.0  # seconds between a Spot notice and the interruption
DELAY_KEY = "deregistration_delay.timeout_seconds"
NO_DRY_RUN = (
    "cannot be tried without doing it (no DryRun in this API): grant it as docs/iam.md shows"
)


CHECK_BOUND = 10.0  # seconds for each load balancer call of `check`

def check_load_balancers(config: Config) -> Iterable[CheckResult]:
    settings = config.load_balancer
    if settings.enabled is False and not config.autoscaling.detach:
        yield CheckResult("load_balancer", OK, "off (load_balancer.enabled: false)")
        return
    clients = aws_clients(config)
    found = discover(config, clients)
    if found.passing or found.instance_id is None:
        yield CheckResult("load_balancer", ERROR, f"cannot discover: {found.why}")
        return
    if settings.enabled is not False:
        yield from _load_balancers(config, clients, found)
    if config.autoscaling.detach:
        yield _detach(found)


def _load_balancers(
    config: Config, clients: AwsClients, found: LoadBalancers
) -> Iterable[CheckResult]:
    if found.empty:
        if config.load_balancer.enabled is True:
            yield CheckResult(
                "load_balancer",
                ERROR,
                f"load_balancer.enabled is true but none found ({found.why})",
            )
        else:
            yield CheckResult("load_balancer", OK, f"none ({found.why}): deregistration off (auto)")
        return
    leaves = SPOT_WARNING - config.deadline_margin
    yield CheckResult(
        "load_balancer",
        OK,
        f"{len(found.target_groups)} target groups, {len(found.classic)} Classic Load "
        f"Balancers ({found.why}); the hooks wait at most {config.load_balancer.wait:g} s",
    )
    instance = found.instance_id or ""
    for group in found.target_groups:
        yield _target_group(clients, group, instance, leaves)
    for name in found.classic:
        yield _classic(clients, name, instance, leaves)
    yield CheckResult(
        "load_balancer:iam",
        OK,
        "read permissions proven by the Describe calls above; DeregisterTargets, "
        "DeregisterInstancesFromLoadBalancer, RegisterTargets and "
        f"RegisterInstancesWithLoadBalancer {NO_DRY_RUN}",
    )


def _delay_warning(leaves: float) -> str:
    return (
        f": longer than the {leaves:g} s a Spot notice leaves (120 s - deadline_margin); "
        "connections still open then are cut by the interruption"
    )


def _target_group(clients: AwsClients, group: str, instance: str, leaves: float) -> CheckResult:
    name = f"lb:{short_group(group)}"
    try:
        ports = registered_ports(clients.bounded(within(CHECK_BOUND)), group, instance)
        answer = clients.client("elbv2").describe_target_group_attributes(TargetGroupArn=group)
    except api_errors() as failure:
        return CheckResult(name, ERROR, f"{group}: {describe_error(failure)} (see docs/iam.md)")
    attributes = {a.get("Key"): a.get("Value") for a in answer.get("Attributes") or []}
    delay = float(attributes.get(DELAY_KEY) or 300)
    shown: List[str] = [str(p) for p in ports]
    where = f"ports {', '.join(shown)}" if shown else "this instance is not registered now"
    detail = f"{where}; deregistration delay {delay:g} s"
    if delay > leaves:
        return CheckResult(name, WARNING, detail + _delay_warning(leaves))
    return CheckResult(name, OK, detail)


def _classic(clients: AwsClients, lb: str, instance: str, leaves: float) -> CheckResult:
    name = f"lb:{lb}"
    elb = clients.client("elb")
    try:
        found = elb.describe_load_balancers(LoadBalancerNames=[lb])["LoadBalancerDescriptions"]
        attributes = elb.describe_load_balancer_attributes(LoadBalancerName=lb)
    except api_errors() as failure:
        return CheckResult(name, ERROR, f"Classic {lb}: {describe_error(failure)}")
    members = {i.get("InstanceId") for d in found for i in d.get("Instances") or []}
    where = "this instance is registered" if instance in members else "this instance is not in it"
    draining = (attributes.get("LoadBalancerAttributes") or {}).get("ConnectionDraining") or {}
    if not draining.get("Enabled"):
        return CheckResult(name, OK, f"Classic; {where}; no connection draining")
    timeout = float(draining.get("Timeout") or 300)
    detail = f"Classic; {where}; connection draining {timeout:g} s"
    if timeout > leaves:
        return CheckResult(name, WARNING, detail + _delay_warning(leaves))
    return CheckResult(name, OK, detail)


def _detach(found: LoadBalancers) -> CheckResult:
    if found.group is None:
        return CheckResult(
            "asg:detach",
            WARNING,
            f"autoscaling.detach is on but this instance is in no Auto Scaling group ({found.why})",
        )
    return CheckResult(
        "asg:detach",
        OK,
        f"group {found.group} (DescribeAutoScalingInstances answered); "
        f"DetachInstances {NO_DRY_RUN}",
    )
