"""From a notice and the config to a `Plan` (CONTRACT.md §4 and §5).

terminate / stop: ECS drain, hooks by order, ECS stop, ECS final stop at its moment, then
the instance action. rebalance: the rebalance hooks, then `instance.after_rebalance`.
hibernate: the hibernate hooks within `hibernate.budget` in total, then the trigger.
Parts that are not configured simply contribute no steps.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence, Tuple

from spotwatch.config.schema import Config, HookSpec
from spotwatch.detection.notices import Notice
from spotwatch.response.hooks import HookStep
from spotwatch.response.plan import Plan, Step, TimedStep

# The hibernate path adds its steps through a provider so this module does not need to
# know how ECS or hibernation are reached; the service wires real ones in.
StepsFor = Callable[[Notice, Config], Sequence[Step]]
TimedFor = Callable[[Notice, Config], Sequence[TimedStep]]


@dataclass
class Providers:
    """Optional parts of a response, each giving steps for a notice (or none)."""

    ecs_drain: Optional[StepsFor] = None
    ecs_stop: Optional[StepsFor] = None
    ecs_final: Optional[TimedFor] = None
    instance: Optional[StepsFor] = None
    hibernate_trigger: Optional[StepsFor] = None
    extra_warnings: List[str] = field(default_factory=list)


def hook_stages(
    hooks: Sequence[HookSpec], end_by: Optional[float] = None
) -> List[Tuple[Step, ...]]:
    """Hooks grouped by `order`, lowest first; hooks of one order run in parallel."""
    ordered = sorted(hooks, key=lambda h: h.order)
    return [
        tuple(HookStep(h, end_by=end_by) for h in group)
        for _, group in itertools.groupby(ordered, key=lambda h: h.order)
    ]


def build_plan(notice: Notice, config: Config, providers: Optional[Providers] = None) -> Plan:
    parts = providers or Providers()
    plan = Plan(notice=notice)
    plan.warnings += parts.extra_warnings  # whatever the action

    def add(stage_list: List[Tuple[Step, ...]], provider: Optional[StepsFor]) -> None:
        if provider is not None:
            steps = tuple(provider(notice, config))
            if steps:
                stage_list.append(steps)

    hooks = config.hooks_for(notice.action)
    if notice.action == "hibernate":
        # No warning comes with hibernate: the budget bounds all its hooks together.
        plan.stages += hook_stages(hooks, end_by=time.monotonic() + config.hibernate.budget)
        add(plan.stages, parts.hibernate_trigger)
        return plan
    if notice.action == "rebalance":
        plan.stages += hook_stages(hooks)
        add(plan.finale, parts.instance)
        return plan
    add(plan.stages, parts.ecs_drain)
    plan.stages += hook_stages(hooks)
    add(plan.stages, parts.ecs_stop)
    if parts.ecs_final is not None:
        plan.timed += list(parts.ecs_final(notice, config))
    add(plan.finale, parts.instance)
    return plan
