"""What each notice gets: from a notice and the config to a `Plan`.

This is where to read what a response does, in what order. The deadline every step works
against is the one rule of response/deadline.py; `Responder` (response/responder.py) is the
one place a plan is started.

terminate, stop (and reboot, shutdown):
  prelude, at once:   load balancer deregistration (the hooks wait for it at most
                      `load_balancer.wait`); Auto Scaling detach on a Spot notice (nothing
                      waits for it); ECS drain (the hooks wait for it at most DRAIN_HOLD = 5 s)
  stages, in order:   hooks by `order` (same order in parallel); ECS stop (`ecs.stop`)
  timed:              ECS final stop at notice time - `stop_timeout` - `deadline_margin`
  finale:             `instance.after_response` (Spot notices only); letting the event
                      go ahead (Azure's StartRequests, `azure.acknowledge`)
  Auto Scaling termination: the same, but the ECS final stop starts at once and ends as
  soon as no task is left (parts/ecs/empty.py), and the finale completes the lifecycle
  action (parts/autoscaling/lifecycle.py; heartbeats meanwhile)
  A system shutdown no notice announced (CONTRACT §8, daemon/shutdown.py): the same as a
  stop, with the ECS final stop started at once and ended by an empty instance (the
  shutdown waits for the response), and never an instance action
hibernate:            hooks held to `hibernate.budget`; then the hibernation trigger
rebalance:            hooks by `order`; finale `instance.after_rebalance`
cancel, start:        hooks by `order`; then, together, what puts back what an earlier
                      response changed (`Providers.undo`: ECS back to ACTIVE, load balancer
                      targets registered again)
rebalance, resume, start and cancel have no deadline of their own: whether or not a hook is
subscribed, every step runs, each on a clock of its own (a hook its timeout, any other step
`OWN_STEP_BUDGET` = 60 s: response/plan.py), never on a budget reckoned from the hooks.
anything else:        hooks by `order` (maintenance, resume)

A hook is a `HookStep` (a command) or a `PresetStep` (a ready-made hook, spotwatch.presets,
reaching what `Providers.preset_services` gives it); both are steps of kind `hook`, in the
same stages. A stage starts when the one before it has ended. A part that is not configured
contributes no step (no ECS agent: no ECS steps). Parts come from `Providers`, so this
module does not need to know how ECS, EC2 or hibernation are reached.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence, Tuple

from spotwatch.config.schema import Config, HookSpec
from spotwatch.detection.notices import Notice
from spotwatch.presets.base import BareServices, Services
from spotwatch.response.hooks import HookStep
from spotwatch.response.plan import Plan, PreludeStep, Step, TimedStep
from spotwatch.response.presetstep import PresetStep

StepsFor = Callable[[Notice, Config], Sequence[Step]]
TimedFor = Callable[[Notice, Config], Sequence[TimedStep]]

# The hooks wait at most this long for the ECS drain call: a slow or throttled ECS API must
# not eat the checkpoint's time (the drain goes on beside the hooks).
DRAIN_HOLD = 5.0
# Ending the instance answers a Spot notice only: an Auto Scaling group or a scheduled event
# ends the instance itself.
ENDS_INSTANCE = frozenset({"instance-action", "termination-time"})
# The instance stays after all: what the response before it changed is put back.
PUTS_BACK = frozenset({"cancel", "start"})
# The kind of the steps that let a scheduled event go ahead (`Providers.release`).
RELEASE = "release"


@dataclass
class Providers:
    """Optional parts of a response, each giving steps for a notice (or none)."""

    lb_deregister: Optional[StepsFor] = None
    asg_detach: Optional[StepsFor] = None
    ecs_drain: Optional[StepsFor] = None
    ecs_stop: Optional[StepsFor] = None
    ecs_final: Optional[TimedFor] = None
    instance: Optional[StepsFor] = None
    hibernate_trigger: Optional[StepsFor] = None
    lifecycle_end: Optional[StepsFor] = None  # CompleteLifecycleAction, for the group's notice
    # Once the response has ended: let the event go ahead now (Azure's StartRequests). Its
    # steps are of kind `release` (RELEASE): an event that then leaves its list went ahead,
    # it was not called off (daemon/scheduled.py).
    release: Optional[StepsFor] = None
    # For `cancel` and `start`: steps that undo what an earlier response did to the
    # instance's place in the fleet; each part that changes it adds its own.
    undo: List[StepsFor] = field(default_factory=list)
    extra_warnings: List[str] = field(default_factory=list)
    # What preset hooks may reach besides programs (the node's name, the region, Docker).
    preset_services: Optional[Services] = None


def hook_stages(
    hooks: Sequence[HookSpec], *, hard: bool = False, services: Optional[Services] = None
) -> List[Tuple[Step, ...]]:
    """Hooks grouped by `order`, lowest first; hooks of one order run in parallel. `hard`:
    the deadline is a wall (hibernate), with no minimum for a hook started late. A preset
    hook is a `PresetStep` reaching `services` (none wired: `BareServices`)."""
    ordered = sorted(hooks, key=lambda h: h.order)
    reach = services or BareServices()
    return [
        tuple(hook_step(h, reach, hard) for h in group)
        for _, group in itertools.groupby(ordered, key=lambda h: h.order)
    ]


def hook_step(spec: HookSpec, services: Services, hard: bool) -> Step:
    if spec.preset is not None:
        return PresetStep(spec, services, hard_deadline=hard)
    return HookStep(spec, hard_deadline=hard)


def build_plan(notice: Notice, config: Config, providers: Optional[Providers] = None) -> Plan:
    parts = providers or Providers()
    plan = Plan(notice=notice)
    plan.warnings += parts.extra_warnings  # whatever the action

    def steps(provider: Optional[StepsFor]) -> Tuple[Step, ...]:
        return tuple(provider(notice, config)) if provider is not None else ()

    def add(stage_list: List[Tuple[Step, ...]], provider: Optional[StepsFor]) -> None:
        found = steps(provider)
        if found:
            stage_list.append(found)

    hooks = config.hooks_for(notice.action)
    services = parts.preset_services
    if notice.action == "hibernate":
        plan.stages += hook_stages(hooks, hard=True, services=services)
        add(plan.stages, parts.hibernate_trigger)
        return plan
    if notice.action == "rebalance":
        plan.stages += hook_stages(hooks, services=services)
        add(plan.finale, parts.instance)
        return plan
    if notice.action in PUTS_BACK:
        plan.stages += hook_stages(hooks, services=services)
        undo = tuple(step for provider in parts.undo for step in provider(notice, config))
        if undo:
            plan.stages.append(undo)
        return plan
    wait = config.load_balancer.wait
    plan.prelude += [PreludeStep(step, wait) for step in steps(parts.lb_deregister)]
    plan.prelude += [PreludeStep(step, 0.0) for step in steps(parts.asg_detach)]
    plan.prelude += [PreludeStep(step, DRAIN_HOLD) for step in steps(parts.ecs_drain)]
    plan.stages += hook_stages(hooks, services=services)
    add(plan.stages, parts.ecs_stop)
    if parts.ecs_final is not None:
        plan.timed += list(parts.ecs_final(notice, config))
    if notice.signal in ENDS_INSTANCE:
        add(plan.finale, parts.instance)
    add(plan.finale, parts.lifecycle_end)
    add(plan.finale, parts.release)
    return plan
