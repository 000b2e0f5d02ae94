"""ECS discovery, drain, stop and final stop against moto's server over real HTTP, a fake
ECS agent, botocore's Stubber (pagination, API errors) and a scripted endpoint (throttling)."""

from __future__ import annotations

import logging
import time
from typing import Any, List

import pytest
from awshelpers import (
    REGION,
    EcsWorld,
    FakeAgent,
    ListJournal,
    ScriptedEndpoint,
    context,
    notice_in,
)
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from spotwatch.config.schema import Config, EcsSettings, InstanceSettings
from spotwatch.parts.awsapi.bounded import within
from spotwatch.parts.awsapi.clients import (
    AwsClients,
    describe_error,
    endpoint_from_env,
    region_from_arn,
)
from spotwatch.parts.ecs.agent import AgentInfo, DiscoveryError, EcsTarget, discover
from spotwatch.parts.ecs.steps import (
    EcsDrainStep,
    EcsFinalStopStep,
    EcsResponse,
    EcsStopStep,
    list_running_tasks,
    stop_reason,
    stop_tasks,
    task_groups,
)
from spotwatch.parts.instance import InstanceResponse
from spotwatch.response.build import Providers, build_plan
from spotwatch.response.runner import Runner
from spotwatch.state.schema import FAILED, OK

ARN = "arn:aws:ecs:eu-west-3:123456789012:container-instance/spot/0123abcd"


def target_for(world: EcsWorld, agent: FakeAgent, **settings: Any) -> EcsTarget:
    """The StopTask path (`stop_via: api`: a Docker daemon on the test machine must not
    change it; tests/aws/test_ecs_runtime.py has the other)."""
    agent.serve(world)
    ecs = EcsSettings(agent_url=agent.url, **{"stop_via": "api", **settings})
    return EcsTarget(ecs, AwsClients(region=REGION))


def stopped_reasons(world: EcsWorld, arns: List[str]) -> List[str]:
    return [t.get("stoppedReason", "") for t in world.tasks(arns)]


def desired(world: EcsWorld, arns: List[str]) -> List[str]:
    return [t["desiredStatus"] for t in world.tasks(arns)]


# --------------------------------------------------------------------- discovery


def test_discovery_reads_cluster_and_arn_from_the_agent(agent: FakeAgent) -> None:
    agent.metadata = {"Cluster": "spot", "ContainerInstanceArn": ARN}
    info = discover(agent.url)
    assert info == AgentInfo("spot", ARN)
    assert info.region == "eu-west-3"
    assert str(info) == "container instance 0123abcd in cluster spot"


def test_discovery_failures_say_why(agent: FakeAgent, dead_url: str) -> None:
    with pytest.raises(DiscoveryError, match=r"Connection refused|Errno"):
        discover(dead_url)
    agent.status = 500
    with pytest.raises(DiscoveryError, match="HTTP 500"):
        discover(agent.url)
    agent.status = 200
    agent.metadata = {"Cluster": "spot"}  # the agent is up but not registered yet
    with pytest.raises(DiscoveryError, match="not registered yet"):
        discover(agent.url)


def test_region_from_arn() -> None:
    assert region_from_arn(ARN) == "eu-west-3"
    assert region_from_arn("not-an-arn") is None


# --------------------------------------------------------------------- moto, real HTTP


def test_drain_sets_the_container_instance_draining(world: EcsWorld, agent: FakeAgent) -> None:
    target = target_for(world, agent)
    outcome = EcsDrainStep(target, target.settings).run(context(notice_in(120)))
    assert outcome.status == OK, outcome.detail
    assert "DRAINING" in outcome.detail
    assert world.instance_status() == "DRAINING"


def test_drain_of_an_unknown_container_instance_fails_in_the_api_words(
    world: EcsWorld, agent: FakeAgent
) -> None:
    target = target_for(world, agent)
    agent.metadata["ContainerInstanceArn"] = world.container_instance_arn + "-gone"
    outcome = EcsDrainStep(target, target.settings).run(context(notice_in(120)))
    assert outcome.status == FAILED
    assert "MISSING" in outcome.detail


def test_stop_stops_standalone_tasks_with_the_formatted_reason(
    world: EcsWorld, agent: FakeAgent
) -> None:
    target = target_for(world, agent)
    notice = notice_in(120)
    outcome = EcsStopStep(target, target.settings).run(context(notice))
    assert outcome.status == OK, outcome.detail
    assert outcome.detail == "stopped 3 standalone tasks (2 service tasks left)"
    expected = f"Spot interruption: terminate at {notice.time_text}"
    assert stopped_reasons(world, world.standalone_tasks) == [expected] * 3
    assert desired(world, world.standalone_tasks) == ["STOPPED"] * 3
    assert desired(world, world.service_tasks) == ["RUNNING"] * 2


def test_stop_all_stops_service_tasks_too(world: EcsWorld, agent: FakeAgent) -> None:
    target = target_for(world, agent, stop="all")
    notice = notice_in(120, "stop")
    outcome = EcsStopStep(target, target.settings).run(context(notice))
    assert outcome.status == OK, outcome.detail
    assert outcome.detail == "stopped 5 tasks"
    assert world.running() == []
    expected = f"Spot interruption: stop at {notice.time_text}"
    assert stopped_reasons(world, world.service_tasks) == [expected] * 2


def test_whole_response_drains_stops_then_final_stop_at_its_moment(
    world: EcsWorld, agent: FakeAgent
) -> None:
    """Drain and the standalone stop at once; the service tasks at notice time -
    stop_timeout - margin (about 2 s from now here); then the instance is terminated."""
    agent.serve(world)
    config = Config(
        deadline_margin=1.0,
        ecs=EcsSettings(agent_url=agent.url, stop_timeout=2.0, stop_via="api"),
        instance=InstanceSettings(after_response="terminate"),
    )
    clients = AwsClients(region=REGION)
    ecs = EcsResponse(EcsTarget(config.ecs, clients))
    providers = Providers(
        ecs_drain=ecs.drain,
        ecs_stop=ecs.stop,
        ecs_final=ecs.final,
        instance=InstanceResponse(clients).steps,
    )
    notice = notice_in(5)
    plan = build_plan(notice, config, providers)
    assert [s.name for s in plan.all_steps()] == [
        "ecs:drain",
        "ecs:stop",
        "ecs:final-stop",
        "instance:terminate",
    ]
    ctx = context(notice, margin=config.deadline_margin, instance_id=world.instance_id)
    final_at = ctx.clock.monotonic_at(config.ecs.stop_timeout + config.deadline_margin)
    journal = ListJournal()
    began = time.monotonic()
    outcomes = Runner(plan, ctx, journal).run()
    assert {name: o.status for name, o in outcomes.items()} == dict.fromkeys(outcomes, OK)
    # The final stop waited for its moment (not before it, and not long after).
    assert journal.monotonic_start["ecs:final-stop"] >= final_at - 0.05
    assert journal.monotonic_start["ecs:final-stop"] - final_at < 1.0
    assert final_at - began > 0.5  # it really was in the future when the response began
    assert world.instance_status() == "DRAINING"
    assert world.running() == []
    assert outcomes["ecs:final-stop"].detail == "stopped 2 tasks still running"
    expected = f"Spot interruption: terminate at {notice.time_text}"
    assert stopped_reasons(world, world.service_tasks) == [expected] * 2
    assert outcomes["instance:terminate"].detail == "TerminateInstances: running → shutting-down"


def test_final_stop_runs_at_once_when_its_moment_has_passed(
    world: EcsWorld, agent: FakeAgent
) -> None:
    agent.serve(world)
    ecs_api = EcsSettings(agent_url=agent.url, stop_timeout=30, stop_via="api")
    config = Config(deadline_margin=10.0, ecs=ecs_api)
    ecs = EcsResponse(EcsTarget(config.ecs, AwsClients(region=REGION)))
    notice = notice_in(20)  # 20 s < 30 s + 10 s: the moment is 20 s gone
    plan = build_plan(notice, config, Providers(ecs_final=ecs.final))
    journal = ListJournal()
    began = time.monotonic()
    outcomes = Runner(plan, context(notice), journal).run()
    assert outcomes["ecs:final-stop"].status == OK
    assert journal.monotonic_start["ecs:final-stop"] - began < 0.5
    assert world.running() == []


def test_dry_run_touches_nothing_and_says_what_it_would_do(
    world: EcsWorld, agent: FakeAgent, caplog: pytest.LogCaptureFixture
) -> None:
    target = target_for(world, agent, stop="all")
    ctx = context(notice_in(120), dry_run=True)
    caplog.set_level(logging.INFO, logger="spotwatch")
    steps = [
        EcsDrainStep(target, target.settings),
        EcsStopStep(target, target.settings),
        EcsFinalStopStep(target, target.settings),
    ]
    outcomes = [s.run(ctx) for s in steps]
    assert [o.status for o in outcomes] == [OK, OK, OK]
    assert all(o.detail.startswith("dry run") for o in outcomes)
    assert outcomes[1].detail == "dry run: would stop 5 tasks"
    assert world.instance_status() == "ACTIVE"
    assert sorted(world.running()) == sorted(world.service_tasks + world.standalone_tasks)
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("would set container instance") for m in messages)
    would_stop = [m for m in messages if m.startswith("would stop task")]
    assert len(would_stop) == 10  # five from the stop step, five from the final stop


def test_required_ecs_with_no_agent_fails_the_step_after_retrying_within_the_deadline(
    dead_url: str, aws_env: Any
) -> None:
    calls: List[float] = []

    def fetch(url: str, timeout: float) -> AgentInfo:
        calls.append(time.monotonic())
        return discover(url, timeout)

    target = EcsTarget(EcsSettings(enabled=True, agent_url=dead_url), AwsClients(), fetch=fetch)
    assert target.start() is None
    ctx = context(notice_in(12), margin=10.0)  # about 1-2 s to the deadline
    began = time.monotonic()
    outcome = EcsDrainStep(target, target.settings).run(ctx)
    took = time.monotonic() - began
    assert outcome.status == FAILED
    assert outcome.detail.startswith("ECS agent: ") and "/v1/metadata" in outcome.detail
    assert len(calls) >= 3  # start, then retried at notice time
    assert took < max(0.0, ctx.clock.time_left()) + 2.5


def test_an_agent_gone_at_notice_time_falls_back_to_what_it_said_before(
    world: EcsWorld, agent: FakeAgent
) -> None:
    target = target_for(world, agent)
    assert target.start() is not None
    agent.status = 503
    # 2.3-3.3 s left: discovery retries until 1 s is left, kept for the drain's call.
    ctx = context(notice_in(12.3), margin=10.0)
    outcome = EcsDrainStep(target, target.settings).run(ctx)
    assert outcome.status == OK, outcome.detail
    assert world.instance_status() == "DRAINING"
    # Tried once for this notice: the next step does not wait for the agent again.
    hits, began = agent.hits, time.monotonic()
    assert EcsStopStep(target, target.settings).run(ctx).status == OK
    assert agent.hits == hits
    assert time.monotonic() - began < 0.5


def test_discovery_is_refreshed_once_per_notice(world: EcsWorld, agent: FakeAgent) -> None:
    target = target_for(world, agent)
    target.start()
    ctx = context(notice_in(120))
    before = agent.hits
    EcsDrainStep(target, target.settings).run(ctx)
    EcsStopStep(target, target.settings).run(ctx)
    assert agent.hits == before + 1
    EcsStopStep(target, target.settings).run(context(notice_in(120, "stop")))
    assert agent.hits == before + 2


# --------------------------------------------------------------------- Stubber


def stubbed_target(stop: str = "standalone") -> tuple[EcsTarget, Stubber]:
    info = AgentInfo("spot", ARN)
    target = EcsTarget(
        EcsSettings(enabled=True, stop=stop, stop_via="api"),
        AwsClients(region=REGION),
        fetch=lambda u, t: info,
    )
    stubber = Stubber(target.clients.ecs())
    stubber.activate()
    return target, stubber


def task_arn(n: int) -> str:
    return f"arn:aws:ecs:{REGION}:123456789012:task/spot/{n:032x}"


def test_list_tasks_follows_every_page_and_describe_goes_by_hundreds(aws_env: Any) -> None:
    target, stubber = stubbed_target()
    arns = [task_arn(n) for n in range(250)]
    query = {"cluster": "spot", "containerInstance": ARN, "desiredStatus": "RUNNING"}
    stubber.add_response("list_tasks", {"taskArns": arns[:100], "nextToken": "p2"}, query)
    stubber.add_response(
        "list_tasks", {"taskArns": arns[100:200], "nextToken": "p3"}, {**query, "nextToken": "p2"}
    )
    stubber.add_response("list_tasks", {"taskArns": arns[200:]}, {**query, "nextToken": "p3"})
    for first in (0, 100, 200):
        batch = arns[first : first + 100]
        tasks = [
            {"taskArn": a, "group": "service:web" if n % 2 else "family:app"}
            for n, a in enumerate(batch, first)
        ]
        stubber.add_response(
            "describe_tasks", {"tasks": tasks}, {"cluster": "spot", "tasks": batch}
        )
    ecs = target.clients.bounded(within(10))
    info = AgentInfo("spot", ARN)
    found = list_running_tasks(ecs, info)
    assert found == arns
    groups = task_groups(ecs, info, found)
    assert len(groups) == 250
    assert sum(1 for g in groups.values() if g.startswith("service:")) == 125
    stubber.assert_no_pending_responses()


def test_stubber_bypasses_botocore_retries(aws_env: Any) -> None:
    """Why throttling is tested against an HTTP endpoint: a stubbed error is never retried."""
    target, stubber = stubbed_target()
    stubber.add_client_error("stop_task", "ThrottlingException", "Rate exceeded", 400)
    stubber.add_response("stop_task", {})
    with pytest.raises(ClientError, match="ThrottlingException"):
        target.clients.ecs().stop_task(cluster="spot", task=task_arn(1))


def test_throttling_is_retried(
    scripted: ScriptedEndpoint, aws_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    throttled = (400, {"__type": "ThrottlingException", "message": "Rate exceeded"})
    scripted.script["StopTask"] = [throttled, throttled, (200, {"task": {}})]
    # The service-specific variable alone points the ECS client at our endpoint.
    monkeypatch.setenv("AWS_ENDPOINT_URL_ECS", scripted.url)
    clients = AwsClients(region=REGION)
    assert clients.ecs().meta.endpoint_url == scripted.url
    stopped, failed = stop_tasks(clients.bounded(within(10)), "spot", [task_arn(1)], "why")
    assert (stopped, failed) == ([task_arn(1)], [])
    assert scripted.count("StopTask") == 3
    assert scripted.calls[-1][1] == {"cluster": "spot", "task": task_arn(1), "reason": "why"}


def test_throttling_beyond_the_time_left_is_reported_not_raised(
    scripted: ScriptedEndpoint, aws_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Retries go on while the bound allows (here 1.5 s), then the API's words are reported.
    (How many fit depends on the pacing a throttled client falls back to: at least one retry.)"""
    scripted.script["StopTask"] = [(400, {"__type": "ThrottlingException", "message": "Slow down"})]
    monkeypatch.setenv("AWS_ENDPOINT_URL_ECS", scripted.url)
    began = time.monotonic()
    stopped, failed = stop_tasks(
        AwsClients(region=REGION).bounded(within(1.5)), "spot", [task_arn(1)], "why"
    )
    assert time.monotonic() - began < 1.5
    assert stopped == []
    assert failed == [(task_arn(1), "ThrottlingException: Slow down")]
    assert scripted.count("StopTask") >= 2


DENIED = (
    "User: arn:aws:sts::123456789012:assumed-role/spot/i-0123 is not authorized to perform: "
    "ecs:UpdateContainerInstancesState on resource: " + ARN
)


def test_access_denied_fails_the_step_with_the_api_message_and_later_steps_run(
    aws_env: Any,
) -> None:
    target, stubber = stubbed_target()
    stubber.add_client_error(
        "update_container_instances_state", "AccessDeniedException", DENIED, 400
    )
    stubber.add_response("list_tasks", {"taskArns": [task_arn(1)]})
    stubber.add_response(
        "describe_tasks", {"tasks": [{"taskArn": task_arn(1), "group": "family:x"}]}
    )
    stubber.add_response("stop_task", {})
    config = Config(ecs=target.settings)
    ecs = EcsResponse(target)
    notice = notice_in(120)
    plan = build_plan(notice, config, Providers(ecs_drain=ecs.drain, ecs_stop=ecs.stop))
    outcomes = Runner(plan, context(notice), ListJournal()).run()
    assert outcomes["ecs:drain"].status == FAILED
    assert outcomes["ecs:drain"].detail == f"AccessDeniedException: {DENIED}"
    assert outcomes["ecs:stop"].status == OK
    assert outcomes["ecs:stop"].detail == "stopped 1 standalone tasks (0 service tasks left)"
    stubber.assert_no_pending_responses()


def test_one_failing_stop_task_fails_the_step_but_the_others_are_stopped(aws_env: Any) -> None:
    target, stubber = stubbed_target(stop="all")
    stubber.add_response("list_tasks", {"taskArns": [task_arn(1), task_arn(2)]})
    # One worker would make the order fixed; with two the stub queue is shared in call order.
    stubber.add_response("stop_task", {})
    stubber.add_client_error(
        "stop_task", "InvalidParameterException", "The referenced task was not found.", 400
    )
    outcome = EcsStopStep(target, target.settings).run(context(notice_in(120)))
    assert outcome.status == FAILED
    assert outcome.detail.startswith("stopped 1 of 2 tasks; ")
    assert outcome.detail.endswith("InvalidParameterException: The referenced task was not found.")


# --------------------------------------------------------------------- small pieces


def test_stop_reason_template() -> None:
    notice = notice_in(120, "stop")
    assert stop_reason("Spot interruption: {action} at {time}", notice) == (
        f"Spot interruption: stop at {notice.time_text}"
    )
    assert stop_reason("bad {placeholder}", notice) == "bad {placeholder}"
    assert stop_reason("{", notice) == "{"
    assert len(stop_reason("x" * 400, notice)) == 255


def test_describe_error_uses_the_api_words() -> None:
    failure = ClientError(
        {"Error": {"Code": "ClusterNotFoundException", "Message": "Cluster not found."}},
        "ListTasks",
    )
    assert describe_error(failure) == "ClusterNotFoundException: Cluster not found."


def test_endpoint_variables_for_older_botocore() -> None:
    env = {"AWS_ENDPOINT_URL": "http://all", "AWS_ENDPOINT_URL_ECS": "http://ecs"}
    assert endpoint_from_env("ecs", env) == "http://ecs"
    assert endpoint_from_env("ec2", env) == "http://all"
    assert endpoint_from_env("ec2", {}) is None


def test_region_order(aws_env: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from spotwatch.simulator.imds import ImdsSimulator

    monkeypatch.delenv("AWS_DEFAULT_REGION")
    with ImdsSimulator(region="ap-south-1") as imds:
        clients = AwsClients(imds_endpoint=imds.endpoint)
        assert clients.region() == "ap-south-1"  # nothing else says it: IMDS
        monkeypatch.setenv("AWS_REGION", "us-west-2")
        assert clients.region() == "us-west-2"  # the environment beats IMDS
        clients.prefer_region("eu-west-3")
        assert clients.region() == "eu-west-3"  # the container instance ARN beats both
        assert clients.ec2().meta.region_name == "eu-west-3"
    assert AwsClients(region="sa-east-1", imds_endpoint=imds.endpoint).region() == "sa-east-1"


def test_endpoint_variables_are_applied_by_hand_on_older_botocore(
    aws_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("spotwatch.parts.awsapi.clients._endpoint_env_is_native", lambda: False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ENDPOINT_URL_EC2", "http://127.0.0.1:8")
    clients = AwsClients(region=REGION)
    assert clients.ec2().meta.endpoint_url == "http://127.0.0.1:8"
    assert clients.ecs().meta.endpoint_url == "http://127.0.0.1:9"
