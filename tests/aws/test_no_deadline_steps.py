"""Steps with no deadline of their own (CONTRACT §7): in `start`, `cancel` and `resume`
responses and for a rebalance's `instance.after_rebalance`, the steps that are not hooks
run after the hooks whether or not any hook is subscribed, each with 60 s of its own.

Before: their budget was reckoned from the subscribed hooks' timeouts; with none (the
default subscribes hooks to terminate and stop only) the deadline was "now", and
`ecs:reactivate` failed with "no time left to call ecs", `after_rebalance` never called EC2.

The real daemon in this process, the IMDS simulator, the fake ECS agent, moto over HTTP."""

from __future__ import annotations

from pathlib import Path

import boto3
from awshelpers import REGION, EcsWorld, FakeAgent
from daemonworld import (
    AT_ONCE,
    ahead,
    cancel_of_a_stop_event,
    config_for,
    poll_until,
    records,
    started,
    steps_of,
    through_a_spot_stop,
)

from spotwatch.config.schema import Config, HookSpec, InstanceSettings, RebalanceSettings
from spotwatch.simulator.imds import ImdsSimulator


def test_a_cancel_with_no_cancel_hook_still_sets_ecs_back_to_active(
    tmp_path: Path, imds: ImdsSimulator, world: EcsWorld, agent: FakeAgent
) -> None:
    """Only a stop hook: the event is canceled, no hook runs for it, and the container
    instance spotwatch drained is ACTIVE again."""
    agent.serve(world)
    assert world.instance_status() == "ACTIVE"
    daemon = started(
        config_for(tmp_path, imds, agent, hooked=("stop",), scheduled_events=AT_ONCE)
    )
    cancel = cancel_of_a_stop_event(daemon, imds, tmp_path)
    assert steps_of(cancel)["ecs:reactivate"] == "ok", cancel
    assert not [s for s in steps_of(cancel) if s.startswith("hook:")]
    assert world.instance_status() == "ACTIVE"


def test_a_start_with_no_start_hook_still_sets_ecs_back_to_active(
    tmp_path: Path, imds: ImdsSimulator, world: EcsWorld, agent: FakeAgent
) -> None:
    """A Spot stop drained the instance; on the next boot, with no start hook subscribed,
    the start response still sets it back to ACTIVE."""
    agent.serve(world)
    config = config_for(tmp_path, imds, agent, hooked=("stop",))
    through_a_spot_stop(config, imds, tmp_path)
    assert world.instance_status() == "DRAINING"
    again = started(config)
    again.responder.wait(10)
    again.shutdown()
    assert steps_of(records(again)["start"])["ecs:reactivate"] == "ok"
    assert world.instance_status() == "ACTIVE"


def test_after_rebalance_calls_ec2_with_no_rebalance_hook(
    tmp_path: Path, world: EcsWorld, agent: FakeAgent
) -> None:
    """`instance.after_rebalance: stop` and no rebalance hook: StopInstances is called."""
    with ImdsSimulator(instance_id=world.instance_id) as imds:
        config = config_for(
            tmp_path,
            imds,
            agent,
            hooked=(),
            rebalance=RebalanceSettings(enabled=True),
            instance=InstanceSettings(after_rebalance="stop"),
        )
        daemon = started(config)
        imds.set_rebalance(ahead(-5))
        try:
            poll_until(daemon, lambda: _all(daemon))
            daemon.responder.wait(10)
            for _ in range(2):  # the notice still shows: the step is confirmed
                assert daemon.watcher is not None
                daemon.watcher.poll_once()
        finally:
            daemon.shutdown()
    (record,) = _all(daemon)
    assert steps_of(record) == {"instance:stop": "ok"}, record
    ec2 = boto3.client("ec2", region_name=REGION)
    found = ec2.describe_instances(InstanceIds=[world.instance_id])["Reservations"][0]
    assert found["Instances"][0]["State"]["Name"] in ("stopping", "stopped")


def test_each_step_gets_its_own_time_after_hooks_that_used_theirs(
    tmp_path: Path, imds: ImdsSimulator, world: EcsWorld, agent: FakeAgent
) -> None:
    """A cancel hook that outlives its 1 s timeout and ignores SIGTERM uses all it may (its
    timeout and the 5 s to SIGKILL): the reactivation after it still has its own time."""
    agent.serve(world)
    base = config_for(tmp_path, imds, agent, hooked=("stop",), scheduled_events=AT_ONCE)
    slow = HookSpec(name="slow", command="trap '' TERM; sleep 30", actions=("cancel",), timeout=1.0)
    config = Config(**{**base.__dict__, "hooks": (*base.hooks, slow)})
    daemon = started(config)
    cancel = cancel_of_a_stop_event(daemon, imds, tmp_path)
    statuses = steps_of(cancel)
    assert (statuses["hook:slow"], statuses["ecs:reactivate"]) == ("timeout", "ok"), cancel
    assert world.instance_status() == "ACTIVE"


def _all(daemon: object) -> list:
    return list(records(daemon).values())  # type: ignore[arg-type]
