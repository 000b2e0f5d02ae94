"""The contract's tables, as the model reads them: signals, hooks, and the steps each action
gets (CONTRACT.md §3, §4, §6, §7). Written from the contract, not from spotwatch's code.

To add a signal: one `Signal` entry in `SIGNALS` (how IMDS shows it, which action and
source it means, how its notice time is reckoned, whether its response waits or can be
canceled), a way to raise it in the driver (model_driver.py `World.apply`) and a motif in
the generator (model_sequences.py `MOTIFS`). To add a step: one `STEPS` entry (which
actions get it, under which setting) and, when it calls AWS, its operation in `CALLS`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, FrozenSet, Optional, Tuple

from model_trace import Shown

# §7 One end, one response: two signals of one of these actions are one end.
END_ACTIONS = frozenset({"terminate", "stop"})
# §4, §7, §8: ECS steps and load balancer deregistration apply to these.
FLEET_ACTIONS = frozenset({"terminate", "stop", "reboot", "shutdown"})
# §7 Start after a stop (§8: a `shutdown` response counts like a `stop`): an earlier boot's
# response to one of these owes a `start`.
ENDS_THE_BOOT = frozenset({"stop", "reboot", "hibernate", "shutdown"})
# §8: a shutdown announced while a response to one of these runs (or after it ended on this
# boot) waits for it and runs nothing of its own.
SHUTDOWN_WAITS_FOR = frozenset({"terminate", "stop", "reboot"})
# §4 hook environment: no deadline of their own (each hook: start + its timeout).
PER_HOOK = frozenset({"rebalance", "resume", "start", "cancel"})
# §7: a scheduled event's code -> the action given to hooks.
EVENT_ACTIONS = {
    "instance-stop": "stop",
    "instance-retirement": "stop",
    "instance-reboot": "reboot",
    "system-reboot": "reboot",
    "system-maintenance": "maintenance",
}
DRAIN_HOLD = 5.0  # §4: the hooks wait for the drain call at most 5 s
PRESET_TIMEOUT = 2.0  # the http preset hook's timeout
HOOK_MINIMUM = 2.0  # slack for a hook started at its deadline (a process must still start)


@dataclass(frozen=True)
class Hook:
    name: str
    actions: Tuple[str, ...]
    order: int = 0
    timeout: float = 8.0
    seconds: float = 0.3  # how long the recording hook sleeps (a preset: until it ends)
    preset: str = ""  # §9: a ready-made hook instead of the recording hook


@dataclass(frozen=True)
class Settings:
    """The configuration a sequence runs with (model_driver.py writes it as YAML)."""

    poll: float = 0.25
    margin: float = 2.0
    lead: float = 6.0  # scheduled_events.lead
    asg_budget: float = 16.0
    stop_timeout: float = 8.0
    hibernate_budget: float = 4.0
    lb: str = "given"  # off | given (target groups) | discovered | classic-given
    lb_wait: float = 1.0
    ecs: bool = True
    dry_run: bool = False
    after_response: str = "none"  # none | stop | terminate
    after_rebalance: str = "none"  # none | stop
    detach: bool = False
    back_hook: bool = True  # a hook subscribed to cancel and start
    rebalance_hook: bool = True
    task_stop_delay: float = 1.5  # how long a stopped task takes to reach STOPPED (world)
    shutdown_budget: float = 14.0  # §8 shutdown.budget (the lock is held when logind answers)
    preset_order: int = -1  # §9: an `http` preset hook of this order (-1: none)
    preset_answer: float = 0.3  # how long the world's receiver takes to answer it
    stop_via: str = "api"  # ecs.stop_via (§4): api, or runtime (the tasks' containers here)
    hooks: Tuple[Hook, ...] = field(default_factory=tuple)

    def all_hooks(self, with_presets: bool = False) -> Tuple[Hook, ...]:
        """The subscriptions the model judges (`with_presets`: as configured; in dry run a
        preset only logs what it would do, so the model expects nothing of it)."""
        hooks = [
            Hook("checkpoint", ("terminate", "stop", "reboot", "shutdown"), 0, seconds=0.5),
            Hook("flush", ("terminate", "stop", "shutdown"), 1, seconds=0.3),
            Hook("maint", ("maintenance",), 0, seconds=0.2),
            Hook("sleepy", ("hibernate",), 0, timeout=3.0, seconds=0.2),
        ]
        if self.rebalance_hook:
            hooks.append(Hook("rebal", ("rebalance",), 0, timeout=4.0, seconds=0.3))
        if self.back_hook:
            hooks.append(Hook("back", ("cancel", "start"), 0, timeout=5.0, seconds=0.3))
        if self.preset_order >= 0 and (with_presets or not self.dry_run):
            hooks.append(self.preset_hook())
        return (*hooks, *self.hooks)

    def preset_hook(self) -> Hook:
        """The `http` preset among the subscriptions: the world's receiver answers it after
        `preset_answer` s; past its timeout (or the deadline) the preset gives up (§9: T)."""
        return Hook(
            "notify",
            ("terminate", "stop", "shutdown"),
            self.preset_order,
            timeout=PRESET_TIMEOUT,
            seconds=min(self.preset_answer, PRESET_TIMEOUT),
            preset="http",
        )

    def hooks_for(self, action: str) -> Tuple[Hook, ...]:
        return tuple(h for h in self.all_hooks() if action in h.actions)

    def hook(self, name: str) -> Optional[Hook]:
        return next((h for h in self.all_hooks() if h.name == name), None)

    @property
    def lb_on(self) -> bool:
        return self.lb != "off"

    def hold(self, throttled: bool) -> float:
        """How long after a response starts its first hooks start at the latest: the prelude's
        hold (§4: the drain at most 5 s, deregistration at most `load_balancer.wait`). In this
        world the drain answers at once unless AWS throttles, so the hold is the LB wait then."""
        prelude = max(DRAIN_HOLD if throttled else 0.5, self.lb_wait if self.lb_on else 0.0)
        return prelude + 1.0 + 4 * self.poll  # a process to start, a poll to notice


@dataclass(frozen=True)
class Signal:
    """One way the instance is taken away, as IMDS shows it (§3, §7)."""

    name: str  # the tracker (one per EventId when `per_event`)
    source: str  # SPOTWATCH_SOURCE
    action_of: Callable[[Shown], Optional[str]]  # the action a shown notice means
    timing: str  # imds | first-seen+budget | not-before | per-hook | announced+budget
    per_event: bool = False
    waits: bool = False  # its response starts at notice time - scheduled_events.lead
    cancelable: bool = False  # §7 Cancel
    ends_instance: bool = False  # instance.after_response applies (§4 step 5)
    detaches: bool = False  # §7 Detach: a Spot notice starts with DetachInstances


def _never(shown: Shown) -> Optional[str]:
    return None  # not read from IMDS: logind announces it on the bus (model_trace.Trace)


def _spot(shown: Shown) -> Optional[str]:
    return shown.what if shown.what in ("terminate", "stop", "hibernate") else None


def _scheduled(shown: Shown) -> Optional[str]:
    if shown.state == "active":
        return EVENT_ACTIONS.get(shown.what)
    if shown.state == "canceled":
        return "cancel"
    return None  # completed events are ignored


SIGNALS: Dict[str, Signal] = {
    s.name: s
    for s in (
        Signal("spot", "instance-action", _spot, "imds", ends_instance=True, detaches=True),
        Signal("rebalance", "rebalance-recommendation", lambda s: "rebalance", "per-hook"),
        Signal(
            "autoscaling",
            "target-lifecycle-state",
            lambda s: "terminate" if s.what == "Terminated" else None,
            "first-seen+budget",
        ),
        Signal(
            "scheduled",
            "scheduled-event",
            _scheduled,
            "not-before",
            per_event=True,
            waits=True,
            cancelable=True,
        ),
        # §8: PrepareForShutdown(true) with no end response running or ended on this boot;
        # its notice time is the announcement + shutdown.budget. Never an instance action.
        Signal("shutdown", "shutdown", _never, "announced+budget"),
    )
}


@dataclass(frozen=True)
class Step:
    """A step that reaches AWS: which actions get it, and under which setting."""

    name: str
    applies: Callable[[str, Settings], bool]  # (action, settings) -> does the plan have it


STEPS: Tuple[Step, ...] = (
    Step("drain", lambda a, s: s.ecs and a in FLEET_ACTIONS),
    Step("deregister", lambda a, s: s.lb_on and a in FLEET_ACTIONS),
    Step("ecs-stop", lambda a, s: s.ecs and a in FLEET_ACTIONS),
    Step("final-stop", lambda a, s: s.ecs and a in FLEET_ACTIONS),
    Step("reactivate", lambda a, s: s.ecs and a in ("cancel", "start")),
    Step("reregister", lambda a, s: s.lb_on and a in ("cancel", "start")),
)
# The AWS operations each step makes (§4, §7), and which of them change something.
CALLS: Dict[str, Tuple[str, ...]] = {
    "drain": ("UpdateContainerInstancesState:DRAINING",),
    "reactivate": ("UpdateContainerInstancesState:ACTIVE",),
    "deregister": ("DeregisterTargets", "DeregisterInstancesFromLoadBalancer"),
    "reregister": ("RegisterTargets", "RegisterInstancesWithLoadBalancer"),
    "ecs-stop": ("StopTask",),
    "final-stop": ("StopTask",),
    "instance": ("StopInstances", "TerminateInstances"),
    # ecs.stop_via runtime: the ECS stop and final stop through the Docker Engine API.
    "runtime-stop": ("StopContainer",),
    "detach": ("DetachInstances",),
    "complete": ("CompleteLifecycleAction",),
    "heartbeat": ("RecordLifecycleActionHeartbeat",),
}
MUTATING: FrozenSet[str] = frozenset(
    op.split(":")[0] for step, ops in CALLS.items() for op in ops
) | frozenset({"UpdateContainerInstancesState"})


def applies(step: str, action: str, settings: Settings) -> bool:
    found = next((s for s in STEPS if s.name == step), None)
    return found is not None and found.applies(action, settings)
