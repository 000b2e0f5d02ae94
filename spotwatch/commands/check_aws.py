"""`check` preflights for the AWS parts: the ECS agent, the cluster and container
instance, the container runtime ECS stops may go through, ECS mixed with hibernation, and
the permission to end the instance."""

from __future__ import annotations

import contextlib
import time
from typing import Iterable, Optional

from spotwatch.commands.results import ERROR, OK, WARNING, CheckResult
from spotwatch.config.schema import Config, EcsSettings
from spotwatch.daemon.wiring import aws_clients
from spotwatch.parts.awsapi.bounded import within
from spotwatch.parts.awsapi.clients import AwsClients, AwsSetupError, describe_error, error_code
from spotwatch.parts.ecs.agent import AGENT_TIMEOUT, AgentInfo, DiscoveryError, discover
from spotwatch.parts.instance import ALLOWED, DENIED, check_permission
from spotwatch.parts.lb.discovery import imds_value as imds_answer
from spotwatch.parts.runtime.engine import connect

HIBERNATION_PATH = "meta-data/hibernation/configured"


def imds_value(config: Config, path: str) -> Optional[str]:
    """One IMDS value, or None when IMDS does not give it."""
    return imds_answer(config, path)[0]


def hibernation_configured(config: Config) -> Optional[str]:
    """Why this instance counts as set up for hibernation, or None."""
    if config.instance.after_response == "hibernate":
        return "instance.after_response is hibernate"
    hooks = [h.name for h in config.hooks if "hibernate" in h.actions]
    if config.hibernate.trigger != "none" and hooks:
        trigger = config.hibernate.trigger
        return f"hibernate hooks ({', '.join(hooks)}) with hibernate.trigger: {trigger}"
    if (imds_value(config, HIBERNATION_PATH) or "").lower() == "true":
        return f"IMDS {HIBERNATION_PATH} is true"
    return None


def ecs_checks(config: Config) -> Iterable[CheckResult]:
    settings = config.ecs
    if settings.enabled is False:
        yield CheckResult("ecs", OK, "off (ecs.enabled: false)")
        return
    started = time.monotonic()
    try:
        info = discover(settings.agent_url, AGENT_TIMEOUT)
    except DiscoveryError as failure:
        if settings.enabled == "auto":
            yield CheckResult("ecs", OK, f"agent not answering ({failure}): ECS steps off (auto)")
        else:
            yield CheckResult("ecs", ERROR, f"ecs.enabled is true but the agent: {failure}")
        return
    took = time.monotonic() - started
    yield CheckResult("ecs", OK, f"agent answered in {took * 1000:.0f} ms: {info}", took)
    clients = aws_clients(config)
    clients.prefer_region(info.region)
    yield cluster_check(clients, info)
    yield runtime_check(settings)
    why = hibernation_configured(config)
    if why is not None:
        yield CheckResult(
            "ecs+hibernation",
            WARNING,
            f"ECS is in use and hibernation is configured ({why}): "
            "EC2 cannot hibernate an instance used by ECS",
        )


def runtime_check(settings: EcsSettings) -> CheckResult:
    """Whether the Docker Engine API answers at `ecs.docker_host`, and so what `stop_via`
    will do: stop tasks through the container runtime, or with StopTask."""
    name, via, host = "ecs:runtime", settings.stop_via, settings.docker_host
    if via == "api":
        return CheckResult(name, OK, "ecs.stop_via is api: tasks are stopped with StopTask")
    started = time.monotonic()
    engine, why = connect(host)
    took = time.monotonic() - started
    if engine is None:
        if via == "auto":
            return CheckResult(name, OK, f"{why}: auto stops tasks with StopTask", took)
        return CheckResult(name, ERROR, f"ecs.stop_via is runtime but {why}", took)
    try:
        server = engine.server()
    finally:
        engine.close()
    return CheckResult(
        name,
        OK,
        f"{server} answered at {host} in {took * 1000:.0f} ms: {via} stops tasks through the "
        "container runtime (StopTask for containers a restart policy would start again)",
        took,
    )


def cluster_check(clients: AwsClients, info: AgentInfo) -> CheckResult:
    """The cluster answers ListTasks for this instance (a call the response needs), and the
    container instance exists (DescribeContainerInstances, needed by `check` only)."""
    from botocore.exceptions import BotoCoreError, ClientError

    name = "ecs:cluster"
    try:
        ecs = clients.ecs()
        ecs.list_tasks(
            cluster=info.cluster,
            containerInstance=info.container_instance_arn,
            desiredStatus="RUNNING",
            maxResults=1,
        )
    except (ClientError, BotoCoreError, AwsSetupError) as failure:
        return CheckResult(name, ERROR, f"ListTasks in {info.cluster}: {describe_error(failure)}")
    try:
        answer = ecs.describe_container_instances(
            cluster=info.cluster, containerInstances=[info.container_instance_arn]
        )
    except (ClientError, BotoCoreError) as failure:
        status = WARNING if error_code(failure).startswith("AccessDenied") else ERROR
        return CheckResult(
            name, status, f"cannot verify the container instance: {describe_error(failure)}"
        )
    if answer.get("failures"):
        reason = answer["failures"][0].get("reason", "?")
        return CheckResult(name, ERROR, f"{info}: {reason}")
    found = answer["containerInstances"][0]
    state = found.get("status", "?")
    running = found.get("runningTasksCount", 0)
    detail = f"{info}: {state}, {running} tasks running ({clients.region()})"
    if state != "ACTIVE" or not found.get("agentConnected", True):
        return CheckResult(
            name,
            WARNING,
            detail + ("" if found.get("agentConnected", True) else ", agent not connected"),
        )
    return CheckResult(name, OK, detail)


def instance_checks(config: Config) -> Iterable[CheckResult]:
    wanted = [
        a for a in (config.instance.after_response, config.instance.after_rebalance) if a != "none"
    ]
    actions = sorted(set(wanted))
    if not actions:
        return
    instance_id = imds_value(config, "meta-data/instance-id")
    if not instance_id:
        yield CheckResult("instance", ERROR, "cannot check: IMDS gave no instance id")
        return
    clients = aws_clients(config)
    if config.ecs.enabled is not False:
        # Else the region comes from the environment or IMDS.
        with contextlib.suppress(DiscoveryError):
            clients.prefer_region(discover(config.ecs.agent_url, AGENT_TIMEOUT).region)
    for action in actions:
        try:
            status, detail = check_permission(clients.bounded(within(10.0)), action, instance_id)
        except AwsSetupError as failure:
            yield CheckResult(f"instance:{action}", ERROR, str(failure))
            continue
        mark = OK if status == ALLOWED else ERROR
        if status == DENIED:
            detail += " (see docs/iam.md)"
        yield CheckResult(f"instance:{action}", mark, detail)
