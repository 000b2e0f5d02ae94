"""What each AWS `rehearse --action` raises in the IMDS simulator, the config the rehearsal's
daemon watches it with, and what `simulate-imds` sets up: the Spot notice, a group's
termination, a scheduled event.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import List, Optional

from spotwatch.clouds.cloud import SimulateRequest, Simulation
from spotwatch.config.schema import Config
from spotwatch.simulator.imds import ImdsSimulator
from spotwatch.simulator.scenario import Step, load_scenario, play

SPOT = ("terminate", "stop", "hibernate", "rebalance")
SCHEDULED_CODES = {"reboot": "instance-reboot", "maintenance": "system-maintenance"}
EVENT_CODES = (
    "instance-stop",
    "instance-retirement",
    "instance-reboot",
    "system-reboot",
    "system-maintenance",
)


def watching(action: str, config: Config) -> Config:
    """The config the rehearsal's daemon runs on: the signal rehearsed is watched, and
    scheduled events are polled as often as the Spot notice."""
    if action == "asg-terminate":
        return replace(config, autoscaling=replace(config.autoscaling, enabled=True))
    if action in SCHEDULED_CODES:
        events = replace(config.scheduled_events, enabled=True, poll_interval=config.poll_interval)
        return replace(config, scheduled_events=events)
    return config


def raise_signal(sim: ImdsSimulator, action: str, lead: float) -> Optional[str]:
    """Raise the rehearsed signal; what to print about it (None: nothing is raised, as for
    `start`, whose signal is the daemon's start itself)."""
    if action in SPOT:
        return f"notice raised: {action} at {sim.raise_notice(action, lead)}"
    if action == "asg-terminate":
        sim.set_asg_state("Terminated")
        return "Auto Scaling group terminating the instance (target-lifecycle-state Terminated)"
    if action in SCHEDULED_CODES:
        code = SCHEDULED_CODES[action]
        not_before = datetime.now(timezone.utc) + timedelta(seconds=lead)
        event_id = sim.scheduled.add(code, not_before.replace(microsecond=0))
        return f"scheduled event raised: {code} ({event_id}), NotBefore in {lead:g} s"
    return None


def title(action: str, lead: float) -> str:
    if action in ("asg-terminate", "start"):
        return action
    if action == "hibernate":
        return "a hibernate notice with no warning"
    return f"a {action} notice with {lead:g} s of warning"


def deadline_words(action: str, config: Config) -> str:
    if action == "hibernate":
        return f"hibernate.budget {config.hibernate.budget:g} s after detection"
    if action == "asg-terminate":
        return f"first seen + autoscaling.budget {config.autoscaling.budget:g} s - deadline_margin"
    if action in SCHEDULED_CODES:
        return f"NotBefore - deadline_margin {config.deadline_margin:g} s"
    if action in ("rebalance", "start"):
        return "none of its own: each hook gets its timeout"
    return f"notice time - deadline_margin {config.deadline_margin:g} s"


def simulation(request: SimulateRequest) -> Simulation:
    """IMDS for `simulate-imds`: the Spot notice `--action` raised `--delay` seconds after
    start, `lead` seconds ahead (default 120; hibernate 0; `rebalance`: a rebalance
    recommendation); with `--scheduled-event`, an active event of that code, NotBefore `lead`
    ahead; `--asg-state` answers autoscaling/target-lifecycle-state (else 404: in no group);
    `--scenario` plays a timeline file (ScenarioError for a bad one, before anything is
    served)."""
    if request.scheduled_event is not None and request.scheduled_event not in EVENT_CODES:
        raise ValueError(
            f"--scheduled-event {request.scheduled_event}: IMDS lists {', '.join(EVENT_CODES)}"
        )
    steps: List[Step] = load_scenario(request.scenario) if request.scenario else []
    sim = ImdsSimulator(
        port=request.port, delay=request.answer_delay, imdsv2_only=request.imdsv2_only
    )
    lead = request.lead
    if lead is None:
        lead = 0.0 if request.action == "hibernate" else 120.0

    def setup() -> None:
        sim.set_asg_state(request.asg_state)
        if request.scheduled_event:
            not_before = datetime.now(timezone.utc) + timedelta(seconds=lead)
            sim.scheduled.add(request.scheduled_event, not_before.replace(microsecond=0))

    def raise_notice() -> str:
        assert request.action is not None
        return sim.raise_notice(request.action, lead)

    def player(stop: threading.Event) -> None:
        play(sim, steps, stop)

    return Simulation(
        sim, setup, raise_notice if request.action else None, player if steps else None
    )
