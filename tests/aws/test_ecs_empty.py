"""The ECS final stop of a group termination: done as soon as no task is left on the
instance (ListTasks, asked every few seconds), not at the deadline - stop_timeout."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

from awshelpers import EcsWorld, FakeAgent, context, notice_in

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
