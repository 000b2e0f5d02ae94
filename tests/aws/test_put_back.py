"""What a `cancel` or a `start` puts back (CONTRACT §7): ECS back to ACTIVE and the load
balancer targets spotwatch deregistered registered again, after a scheduled event is called
off, after a stop and start, after a scheduled reboot; decided by what the earlier response
did, once it has done it.

The real daemon in this process, the IMDS simulator, real hook processes; moto over HTTP
behind the recording endpoints (tests/aws/proxy.py, tests/aws/lbhelpers.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

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


def canceled_to_the_end(daemon: Daemon, imds: ImdsSimulator, event_id: str) -> Dict[str, Any]:
    """Cancel the event, poll until every response has ended; the cancel's record."""
    imds.scheduled.set_state(event_id, "canceled")
    poll_until(daemon, lambda: any(is_cancel(r) for r in records(daemon).values()))
    poll_until(daemon, lambda: not daemon.responder.running(), timeout=20)
    (cancel,) = [r for r in records(daemon).values() if is_cancel(r)]
    return cancel


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
        cancel = canceled_to_the_end(daemon, imds, event_id)
    finally:
        daemon.shutdown()
    assert steps_of(cancel)["ecs:reactivate"] == "ok", cancel
    assert world.instance_status() == "ACTIVE"


def test_a_cancel_puts_nothing_back_while_another_end_stands(
    tmp_path: Path, imds: ImdsSimulator, world: EcsWorld, agent: FakeAgent
) -> None:
    """A scheduled instance-stop drained the instance; then a Spot terminate notice came (its
    own response: another end); then the event was canceled. The instance does not stay, so
    the cancel sets nothing ACTIVE: it stays DRAINING for the terminate (§7 ecs.reactivate:
    "when spotwatch drained it and the instance stays"). (Before: the cancel reactivated it
    while the terminate response ran; the model found it, N4.)"""
    agent.serve(world)
    daemon = started(
        config_for(tmp_path, imds, agent, hooked=("stop", "terminate"), scheduled_events=AT_ONCE)
    )
    event_id = imds.scheduled.add("instance-stop", ahead(60))
    try:
        poll_until(daemon, lambda: draining_in(daemon) == "ok")
        imds.set_instance_action("terminate", ahead(90))
        poll_until(daemon, lambda: any(r["tracker"] == "spot" for r in records(daemon).values()))
        cancel = canceled_to_the_end(daemon, imds, event_id)
    finally:
        daemon.shutdown()
    assert steps_of(cancel).get("ecs:reactivate") != "ok", cancel
    assert world.instance_status() == "DRAINING"


def test_a_start_registers_again_what_a_canceled_response_took_out_before_the_end(
    lb: LbSetup, tmp_path: Path
) -> None:
    """A scheduled instance-stop's response took the instance out of its load balancers; a
    Spot stop joined it; the event was canceled (nothing put back: the Spot stop stands); the
    instance stopped. The next boot's start registers the targets again (§7 Start: what
    spotwatch deregistered before the stop). (Before: the start undid only the Spot stop's
    response, which had left the deregistration to the canceled one: the targets stayed out
    for good; the model found it, N6. A called-off shutdown's deregistration is the same
    case, N5.)"""
    world, proxy, sim = lb
    config = lb_config(world, sim, tmp_path, hooked=("stop",), scheduled_events=AT_ONCE)
    daemon = started(config)
    event_id = sim.scheduled.add("instance-stop", ahead(60))
    try:
        poll_until(daemon, lambda: bool(proxy.of("DeregisterTargets")))
        sim.set_instance_action("stop", ahead(60))
        poll_until(daemon, lambda: any(r["tracker"] == "spot" for r in records(daemon).values()))
        canceled_to_the_end(daemon, sim, event_id)
    finally:
        daemon.shutdown()
    taken_out = targets(proxy.of("DeregisterTargets"))
    assert len(taken_out) == 3 and not proxy.of("RegisterTargets")
    as_an_earlier_boot(tmp_path)
    again = started(config)
    again.responder.wait(15)
    again.shutdown()
    assert targets(proxy.of("RegisterTargets")) == taken_out
