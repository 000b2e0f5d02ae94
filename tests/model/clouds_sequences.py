"""Sequences of world events on Google Cloud and on Azure: seeded, replayable, shrunk by the
AWS model's machinery (model_sequences.py: `Draw`, `interleave`, `shrink`).

Each sequence is one *story* (seeds take them in turn) and up to two random *motifs* (a
signal's life; a disruption: SIGTERM, kill -9, a new boot, metadata faults), interleaved,
each event followed by a gap. `SPOTWATCH_CLOUDS_REPLAY=gcp:SEED[:i,j,k]` (or `azure:...`)
plays one again (test_clouds_combinations.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Tuple

from clouds_signals import CloudSettings
from model_sequences import Draw, Event, Played, booted, draw_events, keep

MIGRATE, TERMINATE, NONE = (
    "MIGRATE_ON_HOST_MAINTENANCE",
    "TERMINATE_ON_HOST_MAINTENANCE",
    "NONE",
)
AZURE_TYPES = (("Preempt", 4), ("Terminate", 1), ("Redeploy", 2), ("Reboot", 2), ("Freeze", 2))
Story = Callable[[Draw], List[Event]]


@dataclass(frozen=True)
class CloudPlayed(Played):
    def headline(self) -> str:
        s = self.settings
        assert isinstance(s, CloudSettings)
        return (
            f"{s.cloud} seed {self.name}: poll={s.poll:g}s gcp.notice={s.gcp_notice:g}s "
            f"acknowledge={s.acknowledge} dry_run={s.dry_run} back_hook={s.back_hook} "
            f"aws_configured={s.aws_configured} first_answer_delay={s.first_answer_delay:g}s"
        )


def disruption(d: Draw) -> List[Event]:
    kind = d.rnd.choices(
        ("sigterm", "kill", "boot", "fault-503", "outage", "cut", "slow", "status",
         "sigterm-twice"),
        (3, 3, 2, 3, 2, 2, 1, 2, 1),
    )[0]  # fmt: skip
    if kind == "fault-503":
        return [(kind, d.rnd.randint(1, 4), d.gap())]
    if kind == "outage":
        return [(kind, d.rnd.choice((1.0, 2.0, 3.0)), d.gap())]
    if kind == "slow":
        return [(kind, d.rnd.choice((0.3, 1.0)), d.gap())]
    return [(kind, d.gap())]


# ---------------------------------------------------------------------------- Google Cloud


def preempted_life(d: Draw) -> List[Event]:
    events: List[Event] = [("preempt", d.gap())]
    if d.rnd.random() < 0.2:
        events.append(("preempt-clear", d.rnd.choice((0.4, 5.0))))
    return events


def maintenance_life(d: Draw) -> List[Event]:
    events: List[Event] = [("maint", d.rnd.choice((MIGRATE, TERMINATE)), d.gap())]
    if d.rnd.random() < 0.3:
        events.append(("maint", d.rnd.choice((MIGRATE, TERMINATE)), d.gap()))  # it changes
    if d.rnd.random() < 0.5:
        events.append(("maint", NONE, d.gap()))  # back to NONE after the maintenance
    return events


def _gcp_stories() -> Tuple[Story, ...]:
    def migrate_then_terminate(d: Draw) -> List[Event]:
        return [("maint", MIGRATE, 1.5), ("maint", TERMINATE, 1.5), ("maint", NONE, 1.0)]

    def stop_then_boot(d: Draw) -> List[Event]:
        return [("maint", TERMINATE, 3.0), ("boot", 2.0)]

    def preempted_at_start(d: Draw) -> List[Event]:
        return [("raise-while-down", "preempt", 1.5)]

    def preempted_then_kill(d: Draw) -> List[Event]:
        return [("preempt", 0.6), (d.rnd.choice(("kill", "sigterm")), 1.5)]

    def faults_then_preempted(d: Draw) -> List[Event]:
        fault = d.rnd.choice((("outage", 2.0, 1.0), ("fault-503", 3, 0.4), ("cut", 0.5)))
        return [fault, ("preempt", 2.0)]

    def preempted_during_maintenance_stop(d: Draw) -> List[Event]:
        return [("maint", TERMINATE, 1.0), ("preempt", 2.0)]

    def maintenance_flaps(d: Draw) -> List[Event]:
        return [("maint", MIGRATE, 0.4), ("maint", NONE, d.rnd.choice((0.4, 5.0))),
                ("maint", MIGRATE, 2.0)]  # fmt: skip

    def sigterm_twice_during_hooks(d: Draw) -> List[Event]:
        return [("preempt", 0.3), ("sigterm-twice", 1.0)]

    return (migrate_then_terminate, stop_then_boot, preempted_at_start, preempted_then_kill,
            faults_then_preempted, preempted_during_maintenance_stop, maintenance_flaps,
            sigterm_twice_during_hooks)  # fmt: skip


# ---------------------------------------------------------------------------- Azure


def event_type(d: Draw) -> str:
    return d.rnd.choices([t for t, _ in AZURE_TYPES], [w for _, w in AZURE_TYPES])[0]


def event_life(d: Draw) -> List[Event]:
    number = d.event_number()
    events: List[Event] = [("event", event_type(d), d.rnd.randint(4, 14), number, d.gap())]
    fate = d.rnd.choices(("stays", "remove", "move"), (4, 3, 2))[0]
    if fate == "move":
        events.append(("event-move", number, d.rnd.randint(4, 14), d.gap()))
    elif fate == "remove":
        events.append(("event-remove", number, d.gap()))
    return events


def _azure_stories() -> Tuple[Story, ...]:
    def canceled_then_preempt(d: Draw) -> List[Event]:
        n, m = d.event_number(), d.event_number()
        return [("event", "Redeploy", 8, n, 4.0), ("event-remove", n, 1.0),
                ("event", "Preempt", 12, m, 2.0)]  # fmt: skip

    def preempt_joins_terminate(d: Draw) -> List[Event]:
        n, m = d.event_number(), d.event_number()
        return [("event", "Terminate", 10, n, 1.0), ("event", "Preempt", 5, m, 2.0)]

    def reboot_then_boot(d: Draw) -> List[Event]:
        kind = d.rnd.choice(("Reboot", "Redeploy"))
        return [("event", kind, 7, d.event_number(), 3.0), ("boot", 2.0)]

    def waiting_event_moved(d: Draw) -> List[Event]:
        n = d.event_number()
        return [("event", "Freeze", 13, n, 1.5), ("status", 0.5), ("event-move", n, 9, 1.0)]

    def removed_before_its_response(d: Draw) -> List[Event]:
        n = d.event_number()
        return [("event", event_type(d), 14, n, 1.5), ("event-remove", n, 1.0)]

    def event_while_down(d: Draw) -> List[Event]:
        return [("raise-while-down", "Preempt", 8, d.event_number(), 1.5)]

    def killed_during_response(d: Draw) -> List[Event]:
        return [("event", "Preempt", 5, d.event_number(), 0.8), ("kill", 1.5)]

    def another_vms_event(d: Draw) -> List[Event]:
        return [("event-elsewhere", "Preempt", 5, 1.0), ("status", 3.0)]

    def outage_over_not_before(d: Draw) -> List[Event]:
        return [("event", "Reboot", 8, d.event_number(), 0.5), ("outage", 3.0, 1.0)]

    return (canceled_then_preempt, preempt_joins_terminate, reboot_then_boot,
            waiting_event_moved, removed_before_its_response, event_while_down,
            killed_during_response, another_vms_event, outage_over_not_before)  # fmt: skip


STORIES = {"gcp": _gcp_stories(), "azure": _azure_stories()}
MOTIFS = {
    "gcp": ((preempted_life, 3), (maintenance_life, 3), (disruption, 4)),
    "azure": ((event_life, 5), (disruption, 4)),
}


def settings_for(d: Draw, cloud: str) -> CloudSettings:
    rnd = d.rnd
    common = dict(
        cloud=cloud,
        lb="off",
        ecs=False,
        dry_run=rnd.random() < 0.1,
        back_hook=rnd.random() < 0.6,
        aws_configured=rnd.random() < 0.3,
    )
    if cloud == "gcp":  # at 1 s and more the values are followed with hanging GETs
        return CloudSettings(
            poll=rnd.choice((0.25, 0.25, 1.0)), gcp_notice=rnd.choice((12.0, 30.0)), **common
        )
    return CloudSettings(
        poll=rnd.choice((0.25, 0.5)),
        acknowledge=rnd.random() < 0.7,
        first_answer_delay=rnd.choice((0.0, 0.0, 0.0, 2.0)),
        **common,
    )


def generate(seed: int, *, cloud: str, can_boot: bool = True) -> CloudPlayed:
    d = Draw(seed)
    settings = settings_for(d, cloud)
    stories = STORIES[cloud]
    events = draw_events(d, stories[seed % len(stories)], MOTIFS[cloud])
    return CloudPlayed(seed, settings, booted(events, can_boot))


def generator(cloud: str) -> Callable[..., Played]:
    return lambda seed, can_boot=True: generate(seed, cloud=cloud, can_boot=can_boot)


def parse(text: str, *, can_boot: bool = True) -> CloudPlayed:
    """`CLOUD:SEED` or `CLOUD:SEED:i,j,k` (a shrunk sequence: the seed's events kept)."""
    cloud, _, rest = text.strip().partition(":")
    seed_text, _, kept_text = rest.partition(":")
    return keep(generate(int(seed_text), cloud=cloud, can_boot=can_boot), kept_text)
