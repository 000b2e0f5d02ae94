"""Every AWS call in a response is bounded by the time left, and throttling is retried while
time allows, not a fixed number of times: against moto's server behind a recording endpoint
that hangs on a call or answers ThrottlingException N times first (tests/aws/proxy.py).

Before this, a hung ECS endpoint held the drain (and the hooks after it) for 4 attempts of a
5 s read timeout (~20 s), and a fifth throttled answer failed the call with time left."""

from __future__ import annotations

import time
from typing import Any, Callable, Tuple

from awshelpers import EcsWorld, FakeAgent, context, notice_in
from proxy import Proxy

from spotwatch.config.schema import EcsSettings
from spotwatch.parts.awsapi.clients import AwsClients
from spotwatch.parts.ecs.agent import EcsTarget
from spotwatch.parts.ecs.steps import EcsDrainStep, EcsFinalStopStep, EcsStopStep
from spotwatch.parts.instance import InstanceActionStep
from spotwatch.state.schema import FAILED, OK

REGION = "us-east-1"


def target_for(world: EcsWorld, agent: FakeAgent, **settings: Any) -> EcsTarget:
    agent.serve(world)
    ecs = EcsSettings(agent_url=agent.url, enabled=True, stop_via="api", **settings)
    return EcsTarget(ecs, AwsClients(region=REGION))


def timed(run: Callable[[], Any]) -> Tuple[Any, float]:
    began = time.monotonic()
    outcome = run()
    return outcome, time.monotonic() - began


def test_a_hung_endpoint_holds_the_drain_no_longer_than_its_own_bound(
    proxy: Proxy, world: EcsWorld, agent: FakeAgent
) -> None:
    """A drain told it may take 1 s (what the hooks wait for at most) ends after ~1 s, FAILED
    with the cause, against an endpoint that never answers; it took ~20 s before."""
    proxy.hang.add("UpdateContainerInstancesState")
    target = target_for(world, agent)
    step = EcsDrainStep(target, target.settings, bound=1.0)
    outcome, took = timed(lambda: step.run(context(notice_in(120))))
    assert outcome.status == FAILED
    assert "timeout" in outcome.detail.lower() or "time left" in outcome.detail
    assert took < 1.6
    assert proxy.count("UpdateContainerInstancesState") >= 1


def test_a_hung_endpoint_holds_no_step_past_the_deadline(
    proxy: Proxy, world: EcsWorld, agent: FakeAgent
) -> None:
    """With ~3 s left before the deadline, the drain's attempts get timeouts that fit in what
    is left, and the step ends before the deadline, not 4 x 5 s later."""
    proxy.hang.add("UpdateContainerInstancesState")
    target = target_for(world, agent)
    ctx = context(notice_in(13), margin=10.0)  # 3-4 s left (IMDS times are whole seconds)
    outcome, took = timed(lambda: EcsDrainStep(target, target.settings).run(ctx))
    assert outcome.status == FAILED
    assert ctx.clock.time_left() > 0, f"ended {-ctx.clock.time_left():.2f} s past the deadline"
    assert took < 4.5


def test_throttling_more_often_than_botocore_would_retry_still_drains(
    proxy: Proxy, world: EcsWorld, agent: FakeAgent
) -> None:
    """Six ThrottlingException answers (botocore's standard mode gives up after 3 or 4
    attempts) and the seventh attempt drains the instance."""
    proxy.throttle["UpdateContainerInstancesState"] = 6
    target = target_for(world, agent)
    outcome = EcsDrainStep(target, target.settings).run(context(notice_in(120)))
    assert outcome.status == OK, outcome.detail
    assert proxy.count("UpdateContainerInstancesState") == 7
    assert world.instance_status() == "DRAINING"


def test_a_throttled_final_stop_stops_every_task_in_time(
    proxy: Proxy, world: EcsWorld, agent: FakeAgent
) -> None:
    """The final stop lists the tasks, then StopTask for each; 10 throttled answers among the
    5 StopTask calls are retried until every task is stopped."""
    proxy.throttle["StopTask"] = 10
    target = target_for(world, agent)
    ctx = context(notice_in(60))
    outcome = EcsFinalStopStep(target, target.settings).run(ctx)
    assert outcome.status == OK, outcome.detail
    assert outcome.detail == "stopped 5 tasks still running"
    assert world.running() == []
    assert proxy.count("StopTask") == 15
    assert proxy.operations()[0] == "ListTasks"
    assert ctx.clock.time_left() > 0


def test_the_stop_step_gives_way_to_the_final_stop(
    proxy: Proxy, world: EcsWorld, agent: FakeAgent
) -> None:
    """The stop step's calls end when the final stop is due (notice time - stop_timeout -
    margin): from then on the final stop stops what is still running. Here the final stop is
    due 1-2 s from now and StopTask stays throttled: the stop step ends by then."""
    proxy.throttle["StopTask"] = 1000
    target = target_for(world, agent, stop_timeout=30.0)
    ctx = context(notice_in(42), margin=10.0)  # final stop due at notice - 40 s: in ~2-3 s
    due = ctx.clock.monotonic_at(40.0)
    outcome = EcsStopStep(target, target.settings).run(ctx)
    assert outcome.status == FAILED
    assert "ThrottlingException" in outcome.detail
    assert time.monotonic() < due + 0.5


def test_ec2_request_limit_is_retried_for_the_instance_action(
    proxy: Proxy, world: EcsWorld
) -> None:
    """EC2 throttles with RequestLimitExceeded (HTTP 503, XML): retried, then the instance
    stops, gracefully."""
    proxy.throttle["StopInstances"] = 5
    step = InstanceActionStep("stop", AwsClients(region=REGION))
    outcome = step.run(context(notice_in(120), instance_id=world.instance_id))
    assert outcome.status == OK, outcome.detail
    assert proxy.count("StopInstances") == 6
