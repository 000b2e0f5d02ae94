"""From a notice and the config to a plan: which steps, in which order; and the order groups
proven with real hook processes that write timestamps."""

from __future__ import annotations

import time
from pathlib import Path
from typing import List, Sequence, Tuple

from response_support import ListJournal, Records, context, notice_in, read_floats

from spotwatch.config.schema import Config, HibernateSettings, HookSpec
from spotwatch.response.build import Providers, build_plan, hook_stages
from spotwatch.response.deadline import deadline_clock
from spotwatch.response.hooks import HookStep
from spotwatch.response.plan import Plan, Step, StepContext, StepOutcome, TimedStep
from spotwatch.response.runner import Runner
from spotwatch.state.schema import OK, TIMEOUT


class Named(Step):
    kind = "test"

    def run(self, ctx: StepContext) -> StepOutcome:
        return StepOutcome(OK)


def names(stages: Sequence[Tuple[Step, ...]]) -> List[List[str]]:
    return [[s.name for s in stage] for stage in stages]


def providers() -> Providers:
    return Providers(
        ecs_drain=lambda n, c: [Named("ecs:drain")],
        ecs_stop=lambda n, c: [Named("ecs:stop")],
        ecs_final=lambda n, c: [TimedStep(Named("ecs:final"), lambda clock: clock.now())],
        instance=lambda n, c: [Named("instance:stop")],
        hibernate_trigger=lambda n, c: [Named("hibernate:trigger")],
        extra_warnings=["ECS and hibernation do not mix"],
    )


HOOKS = (
    HookSpec("late", "true", order=5),
    HookSpec("first", "true", order=-1),
    HookSpec("pair-a", "true", order=0),
    HookSpec("rebalance-only", "true", actions=("rebalance",)),
    HookSpec("pair-b", "true", order=0),
    HookSpec("sleepy", "true", actions=("hibernate",)),
    HookSpec("resume", "true", actions=("resume",)),
)


def test_hook_stages_group_by_order_lowest_first_file_order_within() -> None:
    """Hooks become one stage per `order`, lowest first; same order share a stage."""
    stages = hook_stages(HOOKS[:3] + HOOKS[4:5])
    assert names(stages) == [["hook:first"], ["hook:pair-a", "hook:pair-b"], ["hook:late"]]
    assert all(isinstance(s, HookStep) and not s.hard_deadline for st in stages for s in st)


def test_terminate_plan_is_drain_hooks_stop_then_final_stop_and_instance() -> None:
    """terminate/stop: the ECS drain at once, beside the rest (the hooks wait for it at most
    5 s), the action's hooks by order, ECS stop; the final stop as a timed step; ending the
    instance as the finale; warnings carried over."""
    for action in ("terminate", "stop"):
        plan = build_plan(notice_in(120, action), Config(hooks=HOOKS), providers())
        assert [(p.step.name, p.hold) for p in plan.prelude] == [("ecs:drain", 5.0)]
        assert names(plan.stages) == [
            ["hook:first"],
            ["hook:pair-a", "hook:pair-b"],
            ["hook:late"],
            ["ecs:stop"],
        ]
        assert [t.step.name for t in plan.timed] == ["ecs:final"]
        assert names(plan.finale) == [["instance:stop"]]
        assert plan.warnings == ["ECS and hibernation do not mix"]
        assert plan.find("hook:pair-b") is not None and plan.find("hook:sleepy") is None


def test_rebalance_plan_is_its_hooks_then_the_instance_and_no_ecs() -> None:
    """rebalance: only hooks subscribed to rebalance, no ECS step, then after_rebalance."""
    plan = build_plan(notice_in(120, "rebalance"), Config(hooks=HOOKS), providers())
    assert names(plan.stages) == [["hook:rebalance-only"]]
    assert plan.timed == []
    assert names(plan.finale) == [["instance:stop"]]
    assert plan.warnings == ["ECS and hibernation do not mix"]


def test_hibernate_plan_is_its_hooks_within_the_budget_then_the_trigger() -> None:
    """hibernate: the hibernate hooks, held to the deadline (the budget: no minimum for a
    late hook), then the trigger; no ECS and no instance step."""
    config = Config(hooks=HOOKS, hibernate=HibernateSettings(budget=7.0))
    plan = build_plan(notice_in(0, "hibernate"), config, providers())
    assert names(plan.stages) == [["hook:sleepy"], ["hibernate:trigger"]]
    (hook,) = plan.stages[0]
    assert isinstance(hook, HookStep) and hook.hard_deadline
    assert plan.prelude == [] and plan.timed == [] and plan.finale == []
    assert plan.warnings == ["ECS and hibernation do not mix"]


def test_nothing_configured_gives_an_empty_plan() -> None:
    """No hooks and no providers: no steps at all."""
    plan = build_plan(notice_in(120), Config())
    assert plan.all_steps() == [] and plan.warnings == []


def test_same_order_hooks_overlap_and_the_next_group_waits(
    tmp_path: Path, records: Records
) -> None:
    """Real hooks write start and end timestamps: the two order-0 hooks overlap in time,
    and the order-1 hook starts only after both ended (and promptly)."""

    def spec(name: str, order: int, seconds: float) -> HookSpec:
        stamps = tmp_path / name
        return HookSpec(
            name,
            f"date +%s.%N >> {stamps}; sleep {seconds}; date +%s.%N >> {stamps}",
            order=order,
        )

    config = Config(hooks=(spec("a", 0, 0.6), spec("b", 0, 0.4), spec("c", 1, 0.1)))
    ctx = context(110)
    plan = build_plan(ctx.notice, config)
    outcomes = Runner(plan, ctx, ListJournal()).run()
    assert {name: o.status for name, o in outcomes.items()} == {
        "hook:a": OK,
        "hook:b": OK,
        "hook:c": OK,
    }
    (a_start, a_end), (b_start, b_end), (c_start, _c_end) = (
        read_floats(str(tmp_path / n)) for n in "abc"
    )
    assert a_start < b_end and b_start < a_end  # a and b overlap
    assert abs(a_start - b_start) < 0.3
    assert c_start >= max(a_end, b_end)
    assert c_start - max(a_end, b_end) < 0.5  # and without idling in between


def test_hibernate_budget_bounds_all_hooks_together(tmp_path: Path, records: Records) -> None:
    """Two hibernate hooks in sequence, each wanting 300 s: both are stopped, and the
    whole stage list ends within the 1.5 s budget (plus a short grace), not 2 x 1.5 s."""
    config = Config(
        hooks=(
            HookSpec("h1", "sleep 300", actions=("hibernate",)),
            HookSpec("h2", "sleep 300", actions=("hibernate",), order=1),
        ),
        hibernate=HibernateSettings(budget=1.5),
    )
    notice = notice_in(0, "hibernate")
    begun = time.monotonic()
    ctx = StepContext(deadline_clock(notice, config), instance_id="i-1", dry_run=False)
    plan: Plan = build_plan(ctx.notice, config)
    outcomes = Runner(plan, ctx, ListJournal()).run()
    elapsed = time.monotonic() - begun
    assert outcomes["hook:h1"].status == outcomes["hook:h2"].status == TIMEOUT
    assert "deadline" in outcomes["hook:h2"].detail
    assert 1.4 <= elapsed < 2.5, elapsed
