"""Sequences of world events: a seeded generator, a shrinker, and the replay format.

A sequence is its seed: `generate(seed)` always gives the same settings and events. Each
one holds a *story* (a combination the contract speaks of: a canceled scheduled stop and a
later Spot stop, a join interrupted by a restart, a stop then a new boot...; seeds take
them in turn, so any run of len(STORIES) seeds holds each) and up to two random *motifs*
(a signal's life: raised, moved, changed, withdrawn; a disruption: SIGTERM, kill -9, a new
boot, an IMDS outage, AWS throttling), interleaved at random, each event followed by a gap.

A failing sequence is shrunk by dropping events one at a time while the same invariant
still fails; the result is written `SEED:i,j,k` (the indices kept), and
`SPOTWATCH_MODEL_REPLAY=SEED:i,j,k pytest tests/model -k replay` plays exactly that.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Any, Callable, List, Optional, Sequence, Tuple

from contract_signals import Settings

Event = Tuple[Any, ...]  # (kind, *args, gap seconds)
THROTTLED = (
    "UpdateContainerInstancesState",
    "DeregisterTargets",
    "DescribeTargetHealth",
    "CompleteLifecycleAction",
    "RecordLifecycleActionHeartbeat",
    "StopTask",
    "StopInstances",
    "RegisterTargets",
)
CODES = (
    ("instance-stop", 4),
    ("system-reboot", 3),
    ("system-maintenance", 2),
    ("instance-retirement", 1),
    ("instance-reboot", 1),
)


@dataclass(frozen=True)
class Played:
    seed: int
    settings: Settings
    events: Tuple[Event, ...]
    kept: Optional[Tuple[int, ...]] = None  # indices of the seed's events (None: all)

    @property
    def name(self) -> str:
        if self.kept is None:
            return str(self.seed)
        return f"{self.seed}:{','.join(map(str, self.kept))}"

    def headline(self) -> str:
        settings = self.settings
        return (
            f"seed {self.name}: lb={settings.lb} ecs={settings.ecs} dry_run={settings.dry_run} "
            f"after_response={settings.after_response} after_rebalance={settings.after_rebalance} "
            f"detach={settings.detach} back_hook={settings.back_hook} "
            f"rebalance_hook={settings.rebalance_hook} preset_order={settings.preset_order} "
            f"preset_answer={settings.preset_answer} stop_via={settings.stop_via}"
        )

    def describe(self) -> str:
        steps = [f"  {i:2d}. {e[0]} {' '.join(map(str, e[1:-1]))} (then {e[-1]}s)"
                 for i, e in enumerate(self.events)]  # fmt: skip
        return "\n".join([self.headline(), *steps])


class Draw:
    """What one seed decides, in order (so a seed always gives the same sequence)."""

    def __init__(self, seed: int) -> None:
        self.rnd = random.Random(seed)
        self.events_made = 0

    def gap(self) -> float:
        return self.rnd.choice((0.4, 1.0, 1.0, 1.5, 2.5))

    def lead(self) -> int:
        return self.rnd.randint(12, 16)

    def code(self) -> str:
        return self.rnd.choices([c for c, _ in CODES], [w for _, w in CODES])[0]

    def event_number(self) -> int:
        self.events_made += 1
        return self.events_made


def spot_life(d: Draw) -> List[Event]:
    action = d.rnd.choices(("terminate", "stop", "hibernate"), (5, 5, 1))[0]
    events: List[Event] = [("spot", action, d.lead(), d.gap())]
    if d.rnd.random() < 0.3:
        events.append(("spot", action, d.lead(), d.gap()))  # the time moves
    if d.rnd.random() < 0.2:
        other = "stop" if action == "terminate" else "terminate"
        events.append(("spot", other, d.lead(), d.gap()))  # the action changes
    if d.rnd.random() < 0.25:
        events.append(("spot-clear", d.gap()))
    return events


def scheduled_life(d: Draw) -> List[Event]:
    number = d.event_number()
    events: List[Event] = [("sched", d.code(), d.rnd.randint(4, 14), number, d.gap())]
    fate = d.rnd.choices(("stays", "cancel", "remove", "move", "complete"), (4, 3, 2, 1, 1))[0]
    if fate == "move":
        events.append(("sched-move", number, d.rnd.randint(4, 14), d.gap()))
    elif fate != "stays":
        events.append((f"sched-{fate}", number, d.gap()))
    return events


def rebalance_life(d: Draw) -> List[Event]:
    events: List[Event] = [("rebalance", d.gap())]
    if d.rnd.random() < 0.3:
        events.append(("rebalance-clear", d.gap()))
    return events


def shutdown_life(d: Draw) -> List[Event]:
    """§8: logind announces a shutdown; it is called off, or goes on (then a new boot)."""
    fate = d.rnd.choice(("shutdown-off", "shutdown-through"))
    return [("shutdown", d.rnd.choice((0.4, 0.6, 1.0))), (fate, d.gap())]


def disruption(d: Draw) -> List[Event]:
    kind = d.rnd.choices(
        ("sigterm", "kill", "boot", "imds-down", "imds-down-restart", "throttle", "status",
         "raise-while-down", "sigterm-twice", "hang"),
        (3, 3, 2, 2, 1, 3, 2, 1, 1, 1),
    )[0]  # fmt: skip
    if kind == "hang":
        return [(kind, d.rnd.choice(THROTTLED), d.rnd.choice((2.0, 6.0)), d.gap())]
    if kind == "raise-while-down":
        return [(kind, d.rnd.choice(("terminate", "stop")), d.lead(), d.gap())]
    if kind in ("imds-down", "imds-down-restart"):
        return [(kind, d.rnd.choice((1.0, 2.0, 3.0)), d.gap())]
    if kind == "throttle":
        return [(kind, d.rnd.choice(THROTTLED), d.rnd.randint(1, 4), d.gap())]
    return [(kind, d.gap())]


MOTIFS: Tuple[Tuple[Callable[[Draw], List[Event]], int], ...] = (
    (spot_life, 4),
    (scheduled_life, 4),
    (rebalance_life, 2),
    (lambda d: [("asg", d.gap())], 2),
    (disruption, 5),
    (shutdown_life, 2),
)


def _stories() -> Tuple[Callable[[Draw], List[Event]], ...]:
    def canceled_stop_then_spot_stop(d: Draw) -> List[Event]:
        n = d.event_number()
        return [("sched", "instance-stop", 10, n, 5.5), ("sched-cancel", n, 1.0),
                ("spot", "stop", d.lead(), 2.0)]  # fmt: skip

    def spot_stop_joins_then_cancel(d: Draw) -> List[Event]:
        n = d.event_number()
        return [("sched", "instance-stop", 10, n, 5.0), ("spot", "stop", d.lead(), 1.5),
                ("sched-cancel", n, 1.5)]  # fmt: skip

    def join_then_restart(d: Draw) -> List[Event]:
        first = [("spot", "terminate", d.lead(), 0.6), ("asg", 0.6)]
        if d.rnd.random() < 0.5:
            first.reverse()
        return [*first, (d.rnd.choice(("sigterm", "kill")), 1.0)]

    def stop_then_boot(d: Draw) -> List[Event]:
        if d.rnd.random() < 0.5:
            return [("spot", "stop", d.lead(), 3.5), ("boot", 2.0)]
        return [("sched", "system-reboot", 9, d.event_number(), 6.0), ("boot", 2.0)]

    def imds_down_at_start(d: Draw) -> List[Event]:
        action = d.rnd.choice(("terminate", "stop"))
        return [("imds-down-restart", 3.0, 4.0), ("spot", action, d.lead(), 1.0)]

    def waiting_event(d: Draw) -> List[Event]:
        return [("sched", d.code(), 13, d.event_number(), 1.5), ("status", 0.5)]

    def group_ends_it(d: Draw) -> List[Event]:
        return [("asg", 1.0)]

    def rebalance_then_notice(d: Draw) -> List[Event]:
        return [("rebalance", 2.0), ("spot", "terminate", d.lead(), 1.0)]

    def once_interrupted(d: Draw) -> List[Event]:
        return [("once", d.rnd.choice(("terminate", "stop")), d.lead(), 1.0)]

    def joins_across_a_restart(d: Draw) -> List[Event]:
        return [("asg", 1.2), ("raise-while-down", "terminate", d.lead(), 1.0)]

    def sigterm_twice_while_aws_hangs(d: Draw) -> List[Event]:
        slow = d.rnd.choice(("UpdateContainerInstancesState", "DeregisterTargets"))
        action = d.rnd.choice(("terminate", "stop"))
        return [("hang", slow, 8.0, 0.0), ("spot", action, d.lead(), 1.5), ("sigterm-twice", 1.0)]

    def shutdown_then_boot(d: Draw) -> List[Event]:
        """§8: no notice: the shutdown's own response, the lock released, a start (§7)."""
        return [("shutdown", 1.0), ("shutdown-through", 2.0)]

    def shutdown_meets_a_response(d: Draw) -> List[Event]:
        """§8: a shutdown during a Spot response waits for it; or one called off, then a
        Spot notice of an end (a called-off response ended nothing)."""
        action = d.rnd.choice(("terminate", "stop"))
        if d.rnd.random() < 0.5:
            return [("spot", action, d.lead(), 2.0), ("shutdown", 1.0),
                    ("shutdown-through", 2.0)]  # fmt: skip
        return [("shutdown", 0.6), ("shutdown-off", 2.0), ("spot", action, d.lead(), 1.0)]

    return (canceled_stop_then_spot_stop, spot_stop_joins_then_cancel, join_then_restart,
            stop_then_boot, imds_down_at_start, waiting_event, group_ends_it,
            rebalance_then_notice, once_interrupted, joins_across_a_restart,
            sigterm_twice_while_aws_hangs, shutdown_then_boot,
            shutdown_meets_a_response)  # fmt: skip


STORIES = _stories()


def settings_for(d: Draw) -> Settings:
    rnd = d.rnd
    return Settings(
        lb=rnd.choices(("given", "discovered", "classic-given", "off"), (3, 3, 2, 2))[0],
        ecs=rnd.random() < 0.85,
        dry_run=rnd.random() < 0.1,
        after_response=rnd.choices(("none", "stop", "terminate"), (2, 1, 1))[0],
        after_rebalance=rnd.choice(("none", "stop")),
        detach=rnd.random() < 0.25,
        back_hook=rnd.random() < 0.6,
        rebalance_hook=rnd.random() < 0.7,
    )


def interleave(d: Draw, lists: Sequence[List[Event]]) -> List[Event]:
    pending = [list(x) for x in lists if x]
    out: List[Event] = []
    while pending:
        chosen = d.rnd.choice(pending)
        out.append(chosen.pop(0))
        pending = [x for x in pending if x]
    return out


def generate(seed: int, *, can_boot: bool = True, has_docker: bool = False) -> Played:
    d = Draw(seed)
    settings = settings_for(d)
    events = draw_events(d, STORIES[seed % len(STORIES)], MOTIFS)
    # Drawn last, so the settings and events above are what they were before §8 and §9.
    preset = d.rnd.choices((-1, 0, 1, 2), (2, 1, 1, 1))[0]
    settings = replace(settings, preset_order=preset, preset_answer=d.rnd.choice((0.3, 0.3, 4.0)))
    runtime = d.rnd.random() < 0.5  # drawn in any case, so a seed is the same sequence anywhere
    if runtime and has_docker and settings.ecs:
        settings = replace(settings, stop_via="runtime")
    return Played(seed, settings, booted(events, can_boot))


def draw_events(
    d: Draw,
    story: Callable[[Draw], List[Event]],
    motifs: Sequence[Tuple[Callable[[Draw], List[Event]], int]],
) -> List[Event]:
    """The story and up to two motifs, interleaved."""
    lists = [story(d)]
    for _ in range(d.rnd.randint(0, 2)):
        motif = d.rnd.choices([m for m, _ in motifs], [w for _, w in motifs])[0]
        lists.append(motif(d))
    return interleave(d, lists)


def booted(events: List[Event], can_boot: bool) -> Tuple[Event, ...]:
    if not can_boot:  # no unshare here: a new boot is played as a SIGTERM and a restart
        events = [("sigterm", e[-1]) if e[0] == "boot" else e for e in events]
    return tuple(events)


def parse(text: str, *, can_boot: bool = True, has_docker: bool = False) -> Played:
    """`SEED` or `SEED:i,j,k` (a shrunk sequence: the seed's events at those indices)."""
    seed_text, _, kept_text = text.strip().partition(":")
    return keep(generate(int(seed_text), can_boot=can_boot, has_docker=has_docker), kept_text)


def keep(played: Played, kept_text: str) -> Played:
    """The sequence with only the events at the indices `i,j,k` (all of them for "")."""
    if not kept_text:
        return played
    kept = tuple(int(i) for i in kept_text.split(",") if i != "")
    return replace(played, events=tuple(played.events[i] for i in kept), kept=kept)


def shrink(
    played: Played,
    fails: Callable[[Played], bool],
    *,
    budget: int = 10,
    can_boot: bool = True,
    generator: Optional[Callable[..., Played]] = None,
) -> Tuple[Played, int]:
    """Drop events one at a time (last first) while `fails` still holds; at most `budget`
    replays. Returns the smallest failing sequence found and the replays spent."""
    kept = list(played.kept or range(len(played.events)))
    if generator is None:  # AWS: the seed as it was drawn where it was played
        full = generate(
            played.seed, can_boot=can_boot, has_docker=played.settings.stop_via != "api"
        )
    else:
        full = generator(played.seed, can_boot=can_boot)
    spent = 0
    index = len(kept) - 1
    while index >= 0 and spent < budget:
        trial = kept[:index] + kept[index + 1 :]
        candidate = replace(played, events=tuple(full.events[i] for i in trial), kept=tuple(trial))
        spent += 1
        if trial and fails(candidate):
            kept = trial
        index -= 1
    best = replace(played, events=tuple(full.events[i] for i in kept), kept=tuple(kept))
    return best, spent
