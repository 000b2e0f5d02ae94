"""What only AWS has, and how it is turned off on a cloud that lacks it.

ECS, Elastic Load Balancing, Auto Scaling, the EC2 instance action, EC2 hibernation, the AWS
event sinks (SNS, EventBridge) and EC2 user data need AWS's APIs or IMDS. A cloud lists the
ones it cannot use (`Cloud.lacks`); `confine` turns them off in the config the daemon runs
on, so every part of spotwatch simply finds them off, and says which ones the operator had
configured: `check` reports those lines and the daemon logs them once at start. Never an
error: one config file can serve a fleet on several clouds.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, List, Optional, Sequence, Tuple

from spotwatch.config.schema import Config


@dataclass(frozen=True)
class AwsOnly:
    """One part only AWS has."""

    what: str  # "ECS", for the operator
    # The keys that turn it on in this config, as `key: value` text (None: not configured;
    # defaults such as `ecs.enabled: auto` only mean "where it is found").
    configured: Callable[[Config], Optional[str]]
    off: Callable[[Config], Config]  # the config with it off


def _on(*pairs: Tuple[str, object, bool]) -> Optional[str]:
    """`key: value` of the pairs whose flag is set, or None."""
    shown = [f"{key}: {value}" for key, value, set_ in pairs if set_]
    return ", ".join(shown) if shown else None


def _ecs(c: Config) -> Optional[str]:
    return _on(("ecs.enabled", "true", c.ecs.enabled is True))


def _load_balancers(c: Config) -> Optional[str]:
    lb = c.load_balancer
    return _on(
        ("load_balancer.enabled", "true", lb.enabled is True),
        ("load_balancer.target_groups", list(lb.target_groups), bool(lb.target_groups)),
        ("load_balancer.classic", list(lb.classic), bool(lb.classic)),
    )


def _auto_scaling(c: Config) -> Optional[str]:
    asg = c.autoscaling
    return _on(
        ("autoscaling.enabled", "true", asg.enabled is True),
        ("autoscaling.detach", "true", asg.detach),
        ("autoscaling.lifecycle_hook", asg.lifecycle_hook, bool(asg.lifecycle_hook)),
    )


def _instance_action(c: Config) -> Optional[str]:
    after = c.instance
    return _on(
        ("instance.after_response", after.after_response, after.after_response != "none"),
        ("instance.after_rebalance", after.after_rebalance, after.after_rebalance != "none"),
    )


def _hibernation(c: Config) -> Optional[str]:
    return _on(("hibernate.trigger", "command", c.hibernate.trigger == "command"))


def _event_sinks(c: Config) -> Optional[str]:
    sinks = c.events
    return _on(
        ("events.sns_topic_arn", sinks.sns_topic_arn, bool(sinks.sns_topic_arn)),
        ("events.eventbridge_bus", sinks.eventbridge_bus, bool(sinks.eventbridge_bus)),
    )


ECS = AwsOnly("ECS", _ecs, lambda c: replace(c, ecs=replace(c.ecs, enabled=False)))
LOAD_BALANCERS = AwsOnly(
    "Elastic Load Balancing",
    _load_balancers,
    lambda c: replace(c, load_balancer=replace(c.load_balancer, enabled=False)),
)
AUTO_SCALING = AwsOnly(
    "Auto Scaling",
    _auto_scaling,
    lambda c: replace(c, autoscaling=replace(c.autoscaling, enabled=False, detach=False)),
)
INSTANCE_ACTION = AwsOnly(
    "the EC2 instance action",
    _instance_action,
    lambda c: replace(
        c, instance=replace(c.instance, after_response="none", after_rebalance="none")
    ),
)
EC2_HIBERNATION = AwsOnly(
    "EC2 hibernation",
    _hibernation,
    lambda c: replace(c, hibernate=replace(c.hibernate, trigger="none")),
)
EVENT_SINKS = AwsOnly(
    "the AWS event sinks (SNS, EventBridge)",
    _event_sinks,
    lambda c: replace(c, events=replace(c.events, sns_topic_arn=None, eventbridge_bus=None)),
)
# Read from IMDS; on by default, so only ever turned off quietly.
USER_DATA = AwsOnly(
    "EC2 user data", lambda c: None, lambda c: replace(c, imds=replace(c.imds, user_data=False))
)

ONLY_AWS: Tuple[AwsOnly, ...] = (
    ECS,
    LOAD_BALANCERS,
    AUTO_SCALING,
    INSTANCE_ACTION,
    EC2_HIBERNATION,
    EVENT_SINKS,
    USER_DATA,
)


def confine(config: Config, lacks: Sequence[AwsOnly], cloud: str) -> Tuple[Config, List[str]]:
    """`config` with every part in `lacks` off, and one line per part that was configured."""
    notes: List[str] = []
    for part in lacks:
        keys = part.configured(config)
        if keys is not None:
            notes.append(f"{keys}: {part.what} is AWS-only; off on {cloud}")
        config = part.off(config)
    return config, notes
