"""A scheduled event, end to end: the real daemon (in this process, polled by the test), the
IMDS simulator, real hook processes, ECS in moto. Proves when the response starts, what a
cancel does, the start hooks of a new boot, and that dry run changes nothing."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from awshelpers import EcsWorld, FakeAgent
from daemonworld import AT_ONCE, ahead, config_for, poll_until, ran, started, through_a_spot_stop

from spotwatch.simulator.imds import ImdsSimulator


def test_a_scheduled_reboot_s_hooks_start_at_notbefore_minus_lead(
    tmp_path: Path, imds: ImdsSimulator, world: EcsWorld, agent: FakeAgent
) -> None:
    agent.serve(world)
    daemon = started(config_for(tmp_path, imds, agent))
    not_before = ahead(5)
    event_id = imds.scheduled.add("system-reboot", not_before)
    try:
        poll_until(daemon, lambda: bool(ran(tmp_path)))
        daemon.responder.wait(10)
    finally:
        daemon.shutdown()
    (hook,) = ran(tmp_path)
    start_at = not_before.timestamp() - 2.0
    assert start_at <= hook["t"] <= start_at + 1.5  # a poll interval and a process start
    assert hook["SPOTWATCH_ACTION"] == "reboot"
    assert hook["SPOTWATCH_SOURCE"] == "scheduled-event"
    assert hook["SPOTWATCH_EVENT_ID"] == event_id
    assert hook["SPOTWATCH_EVENT_CODE"] == "system-reboot"
    assert hook["SPOTWATCH_NOTICE_TIME"] == not_before.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert world.instance_status() == "DRAINING"  # ECS steps apply to a reboot


def test_a_canceled_event_runs_the_cancel_hooks_and_reactivates_ecs(
    tmp_path: Path, imds: ImdsSimulator, world: EcsWorld, agent: FakeAgent
) -> None:
    agent.serve(world)
    daemon = started(config_for(tmp_path, imds, agent, scheduled_events=AT_ONCE))
    event_id = imds.scheduled.add("instance-stop", ahead(60))
    try:
        poll_until(daemon, lambda: [h["SPOTWATCH_ACTION"] for h in ran(tmp_path)] == ["stop"])
        daemon.responder.wait(10)
        assert world.instance_status() == "DRAINING"
        imds.scheduled.set_state(event_id, "canceled")
        poll_until(daemon, lambda: len(ran(tmp_path)) == 2)
        daemon.responder.wait(10)
        for _ in range(5):  # the cancel runs once, however long the event stays listed
            assert daemon.watcher is not None
            daemon.watcher.poll_once()
        daemon.responder.wait(10)
    finally:
        daemon.shutdown()
    stop, cancel = ran(tmp_path)
    assert cancel["SPOTWATCH_ACTION"] == "cancel"
    assert cancel["SPOTWATCH_CANCELED_ACTION"] == "stop"
    assert cancel["SPOTWATCH_EVENT_ID"] == event_id
    assert cancel["SPOTWATCH_EVENT_CODE"] == "instance-stop"
    assert cancel["SPOTWATCH_SOURCE"] == "scheduled-event"
    assert cancel["SPOTWATCH_NOTICE_TIME"] == stop["SPOTWATCH_NOTICE_TIME"]
    assert world.instance_status() == "ACTIVE"


def test_an_event_gone_for_three_polls_before_notbefore_is_canceled(
    tmp_path: Path, imds: ImdsSimulator, world: EcsWorld, agent: FakeAgent
) -> None:
    agent.serve(world)
    daemon = started(config_for(tmp_path, imds, agent, scheduled_events=AT_ONCE))
    event_id = imds.scheduled.add("system-maintenance", ahead(60))
    try:
        poll_until(daemon, lambda: len(ran(tmp_path)) == 1)
        imds.scheduled.remove(event_id)
        poll_until(daemon, lambda: len(ran(tmp_path)) == 2)
        daemon.responder.wait(10)
    finally:
        daemon.shutdown()
    maintenance, cancel = ran(tmp_path)
    assert maintenance["SPOTWATCH_ACTION"] == "maintenance"
    assert cancel["SPOTWATCH_CANCELED_ACTION"] == "maintenance"
    assert world.instance_status() == "ACTIVE"  # maintenance runs hooks only: never drained


def test_a_completed_event_gets_no_response(
    tmp_path: Path, imds: ImdsSimulator, world: EcsWorld, agent: FakeAgent
) -> None:
    agent.serve(world)
    daemon = started(config_for(tmp_path, imds, agent))
    imds.scheduled.add("instance-stop", ahead(-60), state="completed")
    try:
        assert daemon.watcher is not None
        for _ in range(5):
            daemon.watcher.poll_once()
        daemon.responder.wait(5)
    finally:
        daemon.shutdown()
    assert ran(tmp_path) == []
    assert world.instance_status() == "ACTIVE"


def test_dry_run_leaves_ecs_as_it_was_and_says_what_it_would_do(
    tmp_path: Path,
    imds: ImdsSimulator,
    world: EcsWorld,
    agent: FakeAgent,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="spotwatch")
    agent.serve(world)
    world.ecs.update_container_instances_state(
        cluster=world.cluster, containerInstances=[world.container_instance_arn], status="DRAINING"
    )  # an operator's own DRAINING
    daemon = started(config_for(tmp_path, imds, agent, dry_run=True, scheduled_events=AT_ONCE))
    daemon.dry_run = True
    event_id = imds.scheduled.add("instance-reboot", ahead(60))
    try:
        poll_until(daemon, lambda: len(ran(tmp_path)) == 1)
        daemon.responder.wait(10)
        imds.scheduled.set_state(event_id, "canceled")
        poll_until(daemon, lambda: len(ran(tmp_path)) == 2)
        daemon.responder.wait(10)
    finally:
        daemon.shutdown()
    assert world.instance_status() == "DRAINING"  # dry run: never set back to ACTIVE
    said = " | ".join(r.getMessage() for r in caplog.records)
    assert "would set" in said and "to DRAINING" in said and "to ACTIVE" in said
    assert all(h["SPOTWATCH_DRY_RUN"] == "1" for h in ran(tmp_path))


def test_start_hooks_run_once_on_the_first_boot_after_a_stop(
    tmp_path: Path, imds: ImdsSimulator, world: EcsWorld, agent: FakeAgent
) -> None:
    agent.serve(world)
    config = config_for(tmp_path, imds, agent)
    through_a_spot_stop(config, imds, tmp_path)
    assert world.instance_status() == "DRAINING"
    for _ in range(2):  # the first start of this boot, then a restart on the same boot
        again = started(config)
        again.responder.wait(10)
        again.shutdown()
    stop, start = ran(tmp_path)
    assert start["SPOTWATCH_ACTION"] == "start"
    assert start["SPOTWATCH_SOURCE"] == "instance-start"
    assert start["SPOTWATCH_NOTICE_TIME"] == stop["SPOTWATCH_NOTICE_TIME"]
    assert world.instance_status() == "ACTIVE"
