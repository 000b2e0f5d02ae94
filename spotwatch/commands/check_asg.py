"""`check` for Auto Scaling: the instance's group, its terminating lifecycle hook, and what
the IAM policy allows.

Auto Scaling has no DryRun: the describe calls themselves show the read permissions
(DescribeAutoScalingInstances, DescribeLifecycleHooks); RecordLifecycleActionHeartbeat and
CompleteLifecycleAction cannot be tried without acting on a real termination, so `check`
says so rather than pretend (docs/iam.md lists them).
"""

from __future__ import annotations

from typing import Iterable

from spotwatch.clouds.aws.imds import ImdsClient
from spotwatch.clouds.aws.monitors import lifecycle_state
from spotwatch.commands.check_aws import imds_value
from spotwatch.commands.results import ERROR, OK, WARNING, CheckResult
from spotwatch.config.schema import Config
from spotwatch.daemon.wiring import aws_clients
from spotwatch.parts.autoscaling.lifecycle import NoHook, find_hook
from spotwatch.parts.awsapi.bounded import within
from spotwatch.parts.awsapi.clients import api_errors, describe_error

CHECK_BOUND = 10.0  # seconds for all of Auto Scaling's calls in `check`


def autoscaling_checks(config: Config) -> Iterable[CheckResult]:
    settings = config.autoscaling
    if settings.enabled is False:
        yield CheckResult("autoscaling", OK, "off (autoscaling.enabled: false)")
        return
    client = ImdsClient.for_a_few_reads(config.imds)
    try:
        state, why = lifecycle_state(client, 2 * config.imds.timeout)
    finally:
        client.close()
    if state is None:  # IMDS did not answer: that says nothing about the group
        mark = ERROR if settings.enabled is True else WARNING
        yield CheckResult(
            "autoscaling", mark, f"cannot tell whether this instance is in an Auto Scaling "
            f"group: {why}"
        )
        return
    if not state:
        mark = ERROR if settings.enabled is True else OK
        yield CheckResult(
            "autoscaling", mark, "IMDS says this instance is in no Auto Scaling group"
        )
        return
    instance_id = imds_value(config, "meta-data/instance-id")
    if not instance_id:
        yield CheckResult("autoscaling", ERROR, "cannot check: IMDS gave no instance id")
        return
    try:
        hook = find_hook(
            aws_clients(config).bounded(within(CHECK_BOUND)), instance_id, settings.lifecycle_hook
        )
    except NoHook as none:
        yield CheckResult(
            "autoscaling",
            WARNING,
            f"{none}; without a terminating lifecycle hook a group termination leaves no "
            "guaranteed time: the response runs until the OS shuts down",
        )
        return
    except api_errors() as failure:
        yield CheckResult("autoscaling", ERROR, f"describing the group: {describe_error(failure)}")
        return
    yield CheckResult(
        "autoscaling",
        OK,
        f"{instance_id} ({state}) in {hook}; heartbeat every {hook.heartbeat_every:.0f} s, "
        f"at most {hook.global_timeout:.0f} s in all (autoscaling.budget {settings.budget:g} s)",
    )
    yield CheckResult(
        "autoscaling:iam",
        OK,
        "DescribeAutoScalingInstances and DescribeLifecycleHooks allowed (they answered); "
        "RecordLifecycleActionHeartbeat and CompleteLifecycleAction cannot be tried without "
        "a real termination (no DryRun in Auto Scaling): see docs/iam.md",
    )
