"""The daemon's AWS wiring and the `check` preflights for ECS and the instance action."""

from __future__ import annotations

import logging
import subprocess
import sys
from dataclasses import replace
from typing import Any, Iterator, List

import pytest
from awshelpers import EcsWorld, FakeAgent, notice_in

from spotwatch.commands.check import (
    ERROR,
    OK,
    PREFLIGHTS,
    WARNING,
    CheckResult,
    check_ecs,
    check_instance_action,
)
from spotwatch.config.schema import (
    Config,
    EcsSettings,
    HibernateSettings,
    HookSpec,
    ImdsSettings,
    InstanceSettings,
    LoadBalancerSettings,
)
from spotwatch.daemon.wiring import daemon_parts
from spotwatch.detection.notices import REBALANCE
from spotwatch.parts.ecs.empty import FinalStopWhenEmptyStep
from spotwatch.response.build import build_plan
from spotwatch.response.deadline import deadline_clock
from spotwatch.simulator.imds import ImdsSimulator

HOOK = HookSpec(name="checkpoint", command=("/bin/true",))


def ecs_config(**fields: Any) -> Config:
    """These tests are about ECS: load balancers off. (With the default IMDS endpoint, which
    does not answer here, their discovery never succeeds, so a plan rightly keeps an
    `lb:deregister` step that would wait for it.)"""
    return Config(load_balancer=LoadBalancerSettings(enabled=False), **fields)


@pytest.fixture
def imds() -> Iterator[ImdsSimulator]:
    with ImdsSimulator() as simulator:
        yield simulator


def plan_names(config: Config, action: str = "terminate") -> List[str]:
    providers = daemon_parts(config).providers(config, False)
    plan = build_plan(notice_in(120, action), config, providers)
    return [s.name for s in plan.all_steps()]


def test_ecs_off_imports_neither_requests_nor_boto3() -> None:
    code = (
        "import sys\n"
        "from spotwatch.config.schema import Config, EcsSettings, InstanceSettings\n"
        "from spotwatch.daemon.wiring import daemon_parts\n"
        "config = Config(ecs=EcsSettings(enabled=False),"
        " instance=InstanceSettings(after_response='stop'))\n"
        "daemon_parts(config).providers(config, False)\n"
        "print(sorted(m for m in ('requests', 'boto3', 'botocore') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_auto_with_no_agent_gives_no_ecs_steps_and_one_info_line(
    dead_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="spotwatch")
    config = ecs_config(hooks=(HOOK,), ecs=EcsSettings(agent_url=dead_url))
    assert plan_names(config) == ["hook:checkpoint"]
    infos = [r for r in caplog.records if r.name == "spotwatch.ecs" and r.levelno >= logging.INFO]
    assert len(infos) == 1
    assert infos[0].levelno == logging.INFO
    assert "ECS steps off (ecs.enabled: auto)" in infos[0].getMessage()


def test_auto_with_an_agent_gives_the_whole_ecs_response(world: EcsWorld, agent: FakeAgent) -> None:
    agent.serve(world)
    config = ecs_config(
        hooks=(HOOK,),
        ecs=EcsSettings(agent_url=agent.url),
        instance=InstanceSettings(after_response="stop"),
    )
    assert plan_names(config) == [
        "ecs:drain",
        "hook:checkpoint",
        "ecs:stop",
        "ecs:final-stop",
        "instance:stop",
    ]
    plain = replace(config, ecs=replace(config.ecs, drain=False, stop="none", final_stop=False))
    assert plan_names(plain) == ["hook:checkpoint", "instance:stop"]


def test_an_unannounced_shutdown_gets_the_ecs_response_and_never_the_instance_action(
    world: EcsWorld, agent: FakeAgent
) -> None:
    """CONTRACT §8: a `shutdown` notice gets the ECS drain, its hooks and the ECS stop; the
    final stop starts at once and ends when no task is left (the held-back shutdown waits
    for it); `instance.after_response` is for Spot notices only."""
    agent.serve(world)
    config = ecs_config(
        hooks=(HOOK,),
        ecs=EcsSettings(agent_url=agent.url),
        instance=InstanceSettings(after_response="stop"),
    )
    notice = replace(notice_in(60, "shutdown"), source="shutdown")
    plan = build_plan(notice, config, daemon_parts(config).providers(config, False))
    assert [s.name for s in plan.all_steps()] == [
        "ecs:drain",
        "hook:checkpoint",
        "ecs:stop",
        "ecs:final-stop",
    ]
    (final,) = plan.timed
    assert isinstance(final.step, FinalStopWhenEmptyStep)
    clock = deadline_clock(notice, config)
    assert abs(final.start_at(clock) - clock.now()) < 1.0  # at once, not at T - stop_timeout


def test_an_agent_that_starts_after_the_daemon_is_found_on_the_notice(
    world: EcsWorld, agent: FakeAgent
) -> None:
    agent.status = 503
    config = ecs_config(ecs=EcsSettings(agent_url=agent.url))
    hooks = daemon_parts(config)
    notice = notice_in(120)
    assert build_plan(notice, config, hooks.providers(config, False)).all_steps() == []
    agent.status = 200
    agent.serve(world)
    later = notice_in(119)
    names = [s.name for s in build_plan(later, config, hooks.providers(config, False)).all_steps()]
    assert names == ["ecs:drain", "ecs:stop", "ecs:final-stop"]


def test_ecs_disabled_never_asks_the_agent(agent: FakeAgent) -> None:
    config = ecs_config(ecs=EcsSettings(enabled=False, agent_url=agent.url))
    assert plan_names(config) == []
    assert agent.hits == 0


def test_rebalance_gets_only_the_instance_step_and_hibernate_none(
    world: EcsWorld, agent: FakeAgent
) -> None:
    agent.serve(world)
    config = ecs_config(
        hooks=(replace(HOOK, actions=("rebalance", "hibernate")),),
        ecs=EcsSettings(agent_url=agent.url),
        instance=InstanceSettings(after_response="terminate", after_rebalance="stop"),
    )
    assert plan_names(config, REBALANCE) == ["hook:checkpoint", "instance:stop"]
    assert plan_names(config, "hibernate") == ["hook:checkpoint", "hibernate:trigger"]


def test_a_reload_that_moves_the_agent_starts_afresh(
    world: EcsWorld, agent: FakeAgent, dead_url: str
) -> None:
    agent.serve(world)
    config = ecs_config(ecs=EcsSettings(agent_url=dead_url))
    hooks = daemon_parts(config)
    moved = replace(config, ecs=replace(config.ecs, agent_url=agent.url))
    plan = build_plan(notice_in(120), moved, hooks.providers(moved, False))
    assert [s.name for s in plan.all_steps()] == ["ecs:drain", "ecs:stop", "ecs:final-stop"]


# --------------------------------------------------------------------- check


def by_name(results: Any) -> dict[str, CheckResult]:
    return {r.name: r for r in results}


def test_preflights_are_registered() -> None:
    assert check_ecs in PREFLIGHTS
    assert check_instance_action in PREFLIGHTS


def test_check_ecs_with_agent_and_cluster(
    world: EcsWorld, agent: FakeAgent, imds: ImdsSimulator
) -> None:
    agent.serve(world)
    config = Config(ecs=EcsSettings(agent_url=agent.url), imds=ImdsSettings(endpoint=imds.endpoint))
    found = by_name(check_ecs(config))
    assert found["ecs"].status == OK
    assert "cluster spot" in found["ecs"].detail
    assert found["ecs:cluster"].status == OK, found["ecs:cluster"].detail
    assert "ACTIVE, 5 tasks running (us-east-1)" in found["ecs:cluster"].detail
    assert "ecs+hibernation" not in found


def test_check_ecs_reports_a_missing_cluster(
    world: EcsWorld, agent: FakeAgent, imds: ImdsSimulator
) -> None:
    agent.serve(world)
    agent.metadata["Cluster"] = "gone"
    config = Config(ecs=EcsSettings(agent_url=agent.url), imds=ImdsSettings(endpoint=imds.endpoint))
    found = by_name(check_ecs(config))
    assert found["ecs:cluster"].status == ERROR
    assert "ClusterNotFoundException" in found["ecs:cluster"].detail


@pytest.mark.parametrize("how", ["hook", "instance", "imds"])
def test_check_warns_when_ecs_and_hibernation_are_both_configured(
    world: EcsWorld, agent: FakeAgent, imds: ImdsSimulator, how: str
) -> None:
    agent.serve(world)
    config = Config(ecs=EcsSettings(agent_url=agent.url), imds=ImdsSettings(endpoint=imds.endpoint))
    if how == "hook":
        config = replace(config, hooks=(replace(HOOK, actions=("hibernate",)),))
    elif how == "instance":
        config = replace(config, instance=InstanceSettings(after_response="hibernate"))
    else:
        imds.set_hibernation_configured(True)
    warning = by_name(check_ecs(config))["ecs+hibernation"]
    assert warning.status == WARNING
    assert "EC2 cannot hibernate an instance used by ECS" in warning.detail
    # A hibernate hook with the trigger off does not count.
    if how == "hook":
        off = replace(config, hibernate=HibernateSettings(trigger="none"))
        assert "ecs+hibernation" not in by_name(check_ecs(off))


def test_check_ecs_without_an_agent(dead_url: str) -> None:
    auto = by_name(check_ecs(Config(ecs=EcsSettings(agent_url=dead_url))))
    assert auto["ecs"].status == OK
    assert "ECS steps off (auto)" in auto["ecs"].detail
    required = by_name(check_ecs(Config(ecs=EcsSettings(enabled=True, agent_url=dead_url))))
    assert required["ecs"].status == ERROR
    assert required["ecs"].detail.startswith("ecs.enabled is true but the agent: ")
    off = by_name(check_ecs(Config(ecs=EcsSettings(enabled=False))))
    assert off["ecs"].status == OK


def test_check_instance_permission_on_moto(world: EcsWorld, dead_url: str) -> None:
    with ImdsSimulator(instance_id=world.instance_id) as imds:
        config = Config(
            ecs=EcsSettings(enabled=False),
            imds=ImdsSettings(endpoint=imds.endpoint),
            instance=InstanceSettings(after_response="hibernate", after_rebalance="terminate"),
        )
        found = by_name(check_instance_action(config))
    assert set(found) == {"instance:hibernate", "instance:terminate"}
    assert all(r.status == OK for r in found.values()), found
    assert list(check_instance_action(Config())) == []
    no_imds = replace(config, imds=ImdsSettings(endpoint=dead_url, timeout=0.2))
    assert [r.status for r in check_instance_action(no_imds)] == [ERROR]
