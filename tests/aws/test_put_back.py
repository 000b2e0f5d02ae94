"""What a `cancel` or a `start` puts back (CONTRACT §7): ECS back to ACTIVE and the load
balancer targets spotwatch deregistered registered again, after a scheduled event is called
off, after a stop and start, after a scheduled reboot; decided by what the earlier response
did, once it has done it.

The real daemon in this process, the IMDS simulator, real hook processes; moto over HTTP
behind the recording endpoints (tests/aws/proxy.py, tests/aws/lbhelpers.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional, Tuple

from awshelpers import EcsWorld, FakeAgent
from daemonworld import (
    AT_ONCE,
    ahead,
    as_an_earlier_boot,
    config_for,
    is_cancel,
    poll_until,
    ran,
    records,
    started,
    steps_of,
    through_a_spot_stop,
)
from lbhelpers import Call, LbSetup, LbWorld
from proxy import Proxy

from spotwatch.config.schema import Config, LoadBalancerSettings
from spotwatch.daemon.shell import Daemon
from spotwatch.simulator.imds import ImdsSimulator


def targets(calls: List[Call]) -> List[Tuple[str, str]]:
    return sorted(
        (c.params["TargetGroupArn"], c.params[f"Targets.member.{n}.Port"])
        for c in calls
        for n in range(1, 10)
        if f"Targets.member.{n}.Port" in c.params
    )


def lb_config(world: LbWorld, sim: ImdsSimulator, tmp_path: Path, **changes: Any) -> Config:
    """No ECS; the group's target groups and Classic Load Balancer, named."""
    settings = LoadBalancerSettings(target_groups=(world.web, world.api), classic=("legacy",))
    return config_for(tmp_path, sim, None, load_balancer=settings, **changes)


def test_a_start_after_a_stop_registers_the_targets_again(lb: LbSetup, tmp_path: Path) -> None:
    """A Spot stop took the instance out of its load balancers; the first start of the next
    boot registers the same targets (every port) and Classic instances again.
    (Before: only a cancel put targets back; after a stop they stayed out.)"""
    world, proxy, sim = lb
    config = lb_config(world, sim, tmp_path, hooked=("stop",))
    through_a_spot_stop(config, sim, tmp_path)
    taken_out = targets(proxy.of("DeregisterTargets"))
    assert len(taken_out) == 3  # web:80, web:8081, api:8080
    again = started(config)
    again.responder.wait(15)
    again.shutdown()
    assert targets(proxy.of("RegisterTargets")) == taken_out
    classic = proxy.of("RegisterInstancesWithLoadBalancer")
    assert [c.params["LoadBalancerName"] for c in classic] == ["legacy"]
    assert steps_of(records(again)["start"])["lb:reregister"] == "ok"


def test_a_start_after_a_scheduled_reboot_registers_the_targets_again(
    lb: LbSetup, tmp_path: Path
) -> None:
    """A scheduled system-reboot's response deregistered the instance; the instance rebooted:
    the start response registers the same targets again."""
    world, proxy, sim = lb
    config = lb_config(world, sim, tmp_path, hooked=("reboot",), scheduled_events=AT_ONCE)
    daemon = started(config)
    sim.scheduled.add("system-reboot", ahead(60))
    try:
        poll_until(daemon, lambda: len(ran(tmp_path)) == 1)
        daemon.responder.wait(15)
    finally:
        daemon.shutdown()
    taken_out = targets(proxy.of("DeregisterTargets"))
    assert taken_out
    as_an_earlier_boot(tmp_path)
    again = started(config)
    again.responder.wait(15)
    again.shutdown()
    assert targets(proxy.of("RegisterTargets")) == taken_out


def draining_in(daemon: Daemon) -> Optional[str]:
    """The status of the first response's drain step (None: no response yet)."""
    found = [steps_of(r).get("ecs:drain") for r in records(daemon).values()]
    return found[0] if found else None


def test_a_cancel_while_the_drain_call_is_in_flight_still_reactivates(
    tmp_path: Path, imds: ImdsSimulator, world: EcsWorld, agent: FakeAgent, proxy: Proxy
) -> None:
    """ECS answers the drain only after 4 s; the event is canceled while the drain call is
    still in flight. The cancel's
    reactivation waits for the drain to end, then sets the instance ACTIVE again.
    (Before: whether to reactivate was decided when the cancel's plan was made, while the
    drain was still in flight: not yet drained, so no reactivation, and DRAINING for good.)"""
    agent.serve(world)
    proxy.delay["UpdateContainerInstancesState"] = 4.0
    daemon = started(
        config_for(tmp_path, imds, agent, hooked=("stop",), scheduled_events=AT_ONCE)
    )
    event_id = imds.scheduled.add("instance-stop", ahead(60))
    try:
        poll_until(daemon, lambda: draining_in(daemon) == "running")
        imds.scheduled.set_state(event_id, "canceled")
        poll_until(daemon, lambda: any(is_cancel(r) for r in records(daemon).values()))
        poll_until(daemon, lambda: not daemon.responder.running(), timeout=20)
    finally:
        daemon.shutdown()
    (cancel,) = [r for r in records(daemon).values() if is_cancel(r)]
    assert steps_of(cancel)["ecs:reactivate"] == "ok", cancel
    assert world.instance_status() == "ACTIVE"
