"""Out of the load balancers before the hooks, out of the group for a sooner replacement.

Real parts: moto's server over HTTP behind a recording endpoint (which plays the target
group `web`, where this instance listens on two ports and targets can stay draining), the
IMDS simulator, and hooks that are real processes writing the wall time they started.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pytest
from awshelpers import ListJournal, context, notice_in
from lbhelpers import LIFECYCLE, MUTATING, LbSetup

from spotwatch.commands.check_lb import check_load_balancers
from spotwatch.commands.results import OK, WARNING
from spotwatch.config.schema import (
    AutoscalingSettings,
    Config,
    EcsSettings,
    HookSpec,
    ImdsSettings,
    LoadBalancerSettings,
)
from spotwatch.daemon.wiring import aws_clients
from spotwatch.detection.notices import Notice
from spotwatch.parts.lb.steps import LoadBalancerResponse
from spotwatch.parts.lb.targets import find_record, notice_key, reregister
from spotwatch.response.build import Providers, build_plan
from spotwatch.response.plan import StepOutcome
from spotwatch.response.runner import Runner
from spotwatch.simulator.imds import ImdsSimulator


def config_for(sim: ImdsSimulator, tmp_path: Path, hook_file: Path, **lb: Any) -> Config:
    hook = HookSpec(name="checkpoint", command=f"date +%s.%N > {hook_file}", timeout=10.0)
    return Config(
        state_dir=str(tmp_path),
        imds=ImdsSettings(endpoint=sim.endpoint, user_data=False),
        hooks=(hook,),
        ecs=EcsSettings(enabled=False),
        load_balancer=LoadBalancerSettings(**lb),
        autoscaling=AutoscalingSettings(),
    )


def respond(
    config: Config,
    notice: Notice,
    instance_id: str,
    *,
    dry_run: bool = False,
    parts: Optional[LoadBalancerResponse] = None,
) -> Tuple[Dict[str, StepOutcome], float]:
    """Runs the whole response; returns the outcomes and the wall time it started. Without
    `parts` (whose discovery may still be under way), a discovery that has answered."""
    if parts is None:
        parts = LoadBalancerResponse(config, aws_clients(config)).start()
        assert parts.discovery.result(10) is not None, "discovery did not answer"
    providers = Providers(lb_deregister=parts.deregister, asg_detach=parts.detach)
    plan = build_plan(notice, config, providers)
    started = time.time()
    outcomes = Runner(
        plan, context(notice, instance_id=instance_id, dry_run=dry_run), ListJournal()
    ).run()
    return outcomes, started


def targets_in(calls: List[Any]) -> List[Tuple[str, str, int]]:
    found = []
    for call in calls:
        n = 1
        while f"Targets.member.{n}.Id" in call.params:
            found.append(
                (
                    call.params["TargetGroupArn"],
                    call.params[f"Targets.member.{n}.Id"],
                    int(call.params[f"Targets.member.{n}.Port"]),
                )
            )
            n += 1
    return found


def test_every_target_group_port_and_classic_is_out_before_the_first_hook(
    lb: LbSetup, tmp_path: Path
) -> None:
    """Auto discovery through the group finds `web` (two ports), `api` and Classic
    `legacy`; every (group, port) is deregistered, the targets report `unused`, and only
    then does the first hook start."""
    world, proxy, sim = lb
    hook_file = tmp_path / "hook-started"
    config = config_for(sim, tmp_path, hook_file, wait=20.0)
    outcomes, started = respond(config, notice_in(120), world.instance_id)
    hook_started = float(hook_file.read_text())

    assert [c.action for c in proxy.calls if "AutoScaling" in c.action and c.at < started] == [
        "DescribeAutoScalingInstances",
        "DescribeAutoScalingGroups",
    ]
    deregistered = targets_in(proxy.of("DeregisterTargets"))
    assert sorted(deregistered) == sorted(
        [
            (world.web, world.instance_id, 80),
            (world.web, world.instance_id, 8081),
            (world.api, world.instance_id, 8080),
        ]
    )
    classic = proxy.of("DeregisterInstancesFromLoadBalancer")
    assert [c.params["LoadBalancerName"] for c in classic] == ["legacy"]
    assert classic[0].params["Instances.member.1.InstanceId"] == world.instance_id
    mutating = [c for c in proxy.calls if c.action in MUTATING]
    assert all(c.at < hook_started for c in mutating)
    health = [c for c in proxy.of("DescribeTargetHealth") if c.at < hook_started]
    assert health, "target health was asked before the hooks"
    assert outcomes["lb:deregister"].status == "ok"
    assert "drained in" in outcomes["lb:deregister"].detail
    assert outcomes["hook:checkpoint"].status == "ok"


def test_hooks_start_no_later_than_wait_while_a_target_keeps_draining(
    lb: LbSetup, tmp_path: Path
) -> None:
    """`web` never finishes draining: the hooks start once `wait` (1.5 s) has passed, and
    target health was asked at least every 2 s until then."""
    world, proxy, sim = lb
    proxy.drain_seconds = float("inf")
    hook_file = tmp_path / "hook-started"
    config = config_for(sim, tmp_path, hook_file, wait=1.5)
    outcomes, started = respond(config, notice_in(120), world.instance_id)
    hook_started = float(hook_file.read_text())
    waited = hook_started - started

    assert 1.3 <= waited <= 1.5 + 1.0
    asked = [
        c.at for c in proxy.of("DescribeTargetHealth") if c.params["TargetGroupArn"] == world.web
    ]
    # How many asks fit in 1.5 s depends on how long discovery and deregistration took (the
    # backoff starts after them); the promise is the spacing, from the response's start
    # through every ask to the hooks.
    assert len(asked) >= 2
    moments = [started, *asked, hook_started]
    assert max(b - a for a, b in zip(moments, moments[1:])) <= 2.0 + 0.5
    assert "2 still draining" in outcomes["lb:deregister"].detail


@pytest.mark.parametrize("given", ["classic", "target_groups"])
def test_each_list_not_given_comes_from_the_group(
    lb: LbSetup, tmp_path: Path, given: str
) -> None:
    """A list given in the config is used as given; the other one (`[]`) is still the
    group's. `classic: [edge]`: out of `edge` (not the group's `legacy`) and of the group's
    target groups; `target_groups: [api]`: out of `api` (not `web`) and of `legacy`. Before,
    either list given skipped the group for both. (`edge` is nobody's: moto keeps the
    instances a group put into its Classic Load Balancers whatever
    DeregisterInstancesFromLoadBalancer says.)"""
    world, proxy, sim = lb
    world.elb.register_instances_with_load_balancer(
        LoadBalancerName="edge", Instances=[{"InstanceId": world.instance_id}]
    )
    lists = {"classic": ("edge",)} if given == "classic" else {"target_groups": (world.api,)}
    config = config_for(sim, tmp_path, tmp_path / "hook", **lists)
    outcomes, _ = respond(config, notice_in(120), world.instance_id)
    groups = {group for group, _, _ in targets_in(proxy.of("DeregisterTargets"))}
    classic = [
        c.params["LoadBalancerName"] for c in proxy.of("DeregisterInstancesFromLoadBalancer")
    ]
    if given == "classic":
        assert (groups, classic) == ({world.web, world.api}, ["edge"])
        described = world.elb.describe_load_balancers(LoadBalancerNames=["edge"])
        assert described["LoadBalancerDescriptions"][0]["Instances"] == []
    else:
        assert (groups, classic) == ({world.api}, ["legacy"])
    assert outcomes["lb:deregister"].status == "ok"


def test_a_discovery_that_failed_at_start_is_tried_again(lb: LbSetup, tmp_path: Path) -> None:
    """IMDS refuses connections for the first ~2 s after start (no instance id, no group):
    discovery is tried again with backoff, succeeds once IMDS answers, and a later notice
    deregisters every target. Before, discovery ran once: deregistration was off until a
    reload, silently."""
    world, proxy, sim = lb
    config = config_for(sim, tmp_path, tmp_path / "hook")
    sim.stop()
    parts = LoadBalancerResponse(config, aws_clients(config)).start()
    time.sleep(2.0)
    assert parts.discovery.result() is None
    sim.start()
    found = parts.discovery.result(10)
    assert found is not None and found.target_groups == (world.web, world.api)
    outcomes, _ = respond(config, notice_in(120), world.instance_id, parts=parts)
    assert len(targets_in(proxy.of("DeregisterTargets"))) == 3
    assert outcomes["lb:deregister"].status == "ok"


@pytest.mark.parametrize("outage", [1.0, float("inf")])
def test_a_notice_during_a_discovery_outage_waits_for_it_at_most_wait(
    lb: LbSetup, tmp_path: Path, outage: float
) -> None:
    """A notice comes while discovery still fails (IMDS refuses): its deregistration waits
    for discovery at most `load_balancer.wait` (3 s), waking it rather than sitting out a
    backoff pause. IMDS back after 1 s: every target is out before the hook starts. IMDS
    down for good: the hook starts by `wait`, and the step fails saying discovery failed.
    Before, such a notice got no deregistration step at all."""
    world, proxy, sim = lb
    hook_file = tmp_path / "hook-started"
    config = config_for(sim, tmp_path, hook_file, wait=3.0)
    sim.stop()
    parts = LoadBalancerResponse(config, aws_clients(config)).start()
    time.sleep(0.5)
    if outage != float("inf"):
        threading.Timer(outage, sim.start).start()
    try:
        outcomes, started = respond(config, notice_in(120), world.instance_id, parts=parts)
    finally:
        parts.stop()  # IMDS down for good: it would try on for the rest of the run
    hook_started = float(hook_file.read_text())
    step = outcomes["lb:deregister"]
    if outage == float("inf"):
        assert step.status == "failed" and "discovery failed" in step.detail, step.detail
        assert proxy.of("DeregisterTargets") == []
        assert 2.5 <= hook_started - started <= 3.0 + 1.0
    else:
        assert step.status == "ok", step.detail
        deregistered = proxy.of("DeregisterTargets")
        assert len(targets_in(deregistered)) == 3
        assert all(c.at < hook_started for c in deregistered)
        assert hook_started - started <= 3.0 + 1.0


def test_dry_run_names_every_target_and_changes_nothing(
    lb: LbSetup, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    world, proxy, sim = lb
    config = replace(
        config_for(sim, tmp_path, tmp_path / "hook"),
        autoscaling=AutoscalingSettings(detach=True),
    )
    with caplog.at_level(logging.INFO, logger="spotwatch"):
        outcomes, _ = respond(config, notice_in(120), world.instance_id, dry_run=True)
    assert [c.action for c in proxy.calls if c.action in MUTATING] == []
    said = [r.getMessage() for r in caplog.records if "would " in r.getMessage()]
    assert f"would deregister {world.instance_id} port 8081 from target group {world.web}" in said
    assert f"would deregister {world.instance_id} from Classic Load Balancer legacy" in said
    assert any("would detach" in line for line in said)
    assert outcomes["lb:deregister"].status == "ok"
    assert find_record(str(tmp_path), notice_key(notice_in(120))) is None


def detach_only(sim: ImdsSimulator, tmp_path: Path) -> Config:
    return replace(
        config_for(sim, tmp_path, tmp_path / "hook", enabled=False),
        autoscaling=AutoscalingSettings(detach=True),
    )


def test_detach_keeps_desired_capacity_so_the_group_replaces_now(
    lb: LbSetup, tmp_path: Path
) -> None:
    world, proxy, sim = lb
    config = detach_only(sim, tmp_path)
    notice = replace(notice_in(120), source="instance-action")
    outcomes, _ = respond(config, notice, world.instance_id)
    detach = proxy.of("DetachInstances")
    assert len(detach) == 1
    assert detach[0].params["ShouldDecrementDesiredCapacity"] == "false"
    assert detach[0].params["AutoScalingGroupName"] == "fleet"
    group = world.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=["fleet"])
    fleet = group["AutoScalingGroups"][0]
    assert fleet["DesiredCapacity"] == 2
    assert world.instance_id not in [i["InstanceId"] for i in fleet["Instances"]]
    assert len(fleet["Instances"]) == 2  # the replacement
    assert outcomes["asg:detach"].detail.startswith("detached from fleet, desired capacity kept")


def test_no_detach_when_auto_scaling_itself_ends_the_instance(
    lb: LbSetup, tmp_path: Path
) -> None:
    world, proxy, sim = lb
    config = detach_only(sim, tmp_path)
    notice = replace(notice_in(120), source="target-lifecycle-state")
    outcomes, _ = respond(config, notice, world.instance_id)
    assert "asg:detach" not in outcomes
    assert proxy.of("DetachInstances") == []


def test_a_cancel_registers_the_same_targets_again(lb: LbSetup, tmp_path: Path) -> None:
    world, proxy, sim = lb
    config = config_for(sim, tmp_path, tmp_path / "hook")
    notice = notice_in(120)
    respond(config, notice, world.instance_id)
    record = find_record(str(tmp_path), notice_key(notice))  # a response with no key
    assert record is not None
    saved = json.loads((tmp_path / "load-balancer.json").read_text())
    assert len(saved) == 1

    ok, detail = reregister(record, aws_clients(config), lambda: 60.0)
    assert ok, detail
    assert sorted(targets_in(proxy.of("RegisterTargets"))) == sorted(
        targets_in(proxy.of("DeregisterTargets"))
    )
    classic = proxy.of("RegisterInstancesWithLoadBalancer")
    assert [c.params["LoadBalancerName"] for c in classic] == ["legacy"]


def test_check_lists_groups_ports_and_warns_about_long_deregistration_delays(
    lb: LbSetup, tmp_path: Path
) -> None:
    _world, proxy, sim = lb
    config = replace(
        config_for(sim, tmp_path, tmp_path / "hook"),
        autoscaling=AutoscalingSettings(detach=True),
    )
    results = {r.name: r for r in check_load_balancers(config)}
    assert results["load_balancer"].status == OK
    assert "2 target groups, 1 Classic" in results["load_balancer"].detail
    web = results["lb:web"]
    assert web.status == WARNING
    assert web.detail.startswith(
        "ports 80, 8081; deregistration delay 300 s: longer than the 110 s"
    )
    assert results["lb:api"].detail.startswith("ports 8080;")
    assert "cannot be tried without doing it" in results["load_balancer:iam"].detail
    assert results["asg:detach"].status == OK
    assert [c for c in proxy.calls if c.action in MUTATING] == []


def test_check_fails_when_enabled_true_finds_none(lb: LbSetup, tmp_path: Path) -> None:
    _world, _proxy, sim = lb
    sim.set_path(LIFECYCLE, 404, "")
    config = config_for(sim, tmp_path, tmp_path / "hook", enabled=True)
    results = list(check_load_balancers(config))
    assert [(r.name, r.status) for r in results] == [("load_balancer", "error")]
    assert "not in an Auto Scaling group" in results[0].detail


def test_an_unannounced_shutdown_deregisters_before_its_hooks_and_never_detaches(
    lb: LbSetup, tmp_path: Path
) -> None:
    """CONTRACT §8: a `shutdown` notice takes the instance out of its load balancers before
    the hooks, as a stop does; it is no Spot notice, so there is no detach."""
    world, proxy, sim = lb
    config = replace(
        config_for(sim, tmp_path, tmp_path / "hook", wait=20.0),
        autoscaling=AutoscalingSettings(detach=True),
    )
    notice = replace(notice_in(60, "shutdown"), source="shutdown")
    outcomes, _ = respond(config, notice, world.instance_id)
    assert outcomes["lb:deregister"].status == "ok"
    assert outcomes["hook:checkpoint"].status == "ok"
    assert len(targets_in(proxy.of("DeregisterTargets"))) == 3
    assert proxy.of("DetachInstances") == []
