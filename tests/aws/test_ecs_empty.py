"""The ECS final stop of a group termination: done as soon as no task is left running on the
instance (asked every few seconds), not at the deadline - stop_timeout. "Left running" is
judged by each task's lastStatus (DescribeTasks), not by its desired status: a task told to
stop runs on for its stop timeout (CONTRACT §7)."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

from awshelpers import EcsWorld, FakeAgent, context, notice_in
from proxy import Proxy

from spotwatch.config.schema import Config, EcsSettings
from spotwatch.daemon.wiring import aws_clients
from spotwatch.parts.ecs.empty import FinalStopWhenEmptyStep
from spotwatch.parts.ecs.steps import EcsFinalStopStep, EcsTarget


def test_the_final_stop_ends_as_soon_as_the_last_task_has_left(
    world: EcsWorld, agent: FakeAgent
) -> None:
    agent.serve(world)
    settings = EcsSettings(agent_url=agent.url)
    target = EcsTarget(settings, aws_clients(Config(ecs=settings)))
    step = FinalStopWhenEmptyStep(EcsFinalStopStep(target, settings), poll=0.2)
    notice = replace(notice_in(600), source="target-lifecycle-state")
    leaving = threading.Timer(
        1.0,
        lambda: [
            world.ecs.stop_task(cluster=world.cluster, task=arn)
            for arn in world.service_tasks + world.standalone_tasks
        ],
    )
    started = time.monotonic()
    leaving.start()
    outcome = step.run(context(notice))
    took = time.monotonic() - started
    leaving.join()
    assert outcome.status == "ok" and "no task left" in outcome.detail
    assert 1.0 <= took < 5.0  # not the ~560 s until deadline - stop_timeout


def test_a_task_told_to_stop_counts_until_its_last_status_is_stopped(
    world: EcsWorld, agent: FakeAgent, proxy: Proxy
) -> None:
    """Every task is told to stop (desired status STOPPED) but runs on for 2 s more, as its
    stop timeout allows: the final stop ends only once DescribeTasks says STOPPED.
    (Before: it ended at once on desired status, and the group went on while tasks ran.)"""
    agent.serve(world)
    settings = EcsSettings(agent_url=agent.url)
    target = EcsTarget(settings, aws_clients(Config(ecs=settings)))
    step = FinalStopWhenEmptyStep(EcsFinalStopStep(target, settings), poll=0.2)
    notice = replace(notice_in(600), source="target-lifecycle-state")
    everything = world.service_tasks + world.standalone_tasks
    for arn in everything:
        world.ecs.stop_task(cluster=world.cluster, task=arn)
        proxy.stopping[arn] = time.monotonic() + 2.0
    started = time.monotonic()
    outcome = step.run(context(notice))
    took = time.monotonic() - started
    assert outcome.status == "ok" and "no task left" in outcome.detail
    assert 2.0 <= took < 6.0, took
    assert proxy.count("StopTask") == 0  # stopping already: nothing to stop
