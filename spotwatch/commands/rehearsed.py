"""What each `rehearse --action` raises in the simulator, and what the daemon must watch for
it: the Spot notice, a group's termination, a scheduled event, the first boot after a stop,
or a shutdown no notice announced (simulated: a rehearsal never takes logind's lock).
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Callable, Optional

from spotwatch.config.schema import Config
from spotwatch.simulator.imds import ImdsSimulator
from spotwatch.state.files import STATE_FILE
from spotwatch.state.schema import FORMAT_VERSION

SPOT = ("terminate", "stop", "hibernate", "rebalance")
SCHEDULED_CODES = {"reboot": "instance-reboot", "maintenance": "system-maintenance"}
ACTIONS = (*SPOT, "asg-terminate", *SCHEDULED_CODES, "start", "shutdown")
EARLIER_BOOT = "rehearsal-earlier-boot"


def default_lead(action: str) -> float:
    return 0.0 if action == "hibernate" else 120.0


def hook_action(action: str) -> str:
    """The action the hooks are told (an Auto Scaling termination is a `terminate`)."""
    return "terminate" if action == "asg-terminate" else action


def watching(action: str, config: Config) -> Config:
    """The config the rehearsal's daemon runs on: the signal rehearsed is watched, and
    scheduled events are polled as often as the Spot notice. No rehearsal takes logind's
    shutdown lock: the real daemon's is the one that counts."""
    config = replace(config, shutdown=replace(config.shutdown, enabled=False))
    if action == "asg-terminate":
        return replace(config, autoscaling=replace(config.autoscaling, enabled=True))
    if action in SCHEDULED_CODES:
        events = replace(
            config.scheduled_events, enabled=True, poll_interval=config.poll_interval
        )
        return replace(config, scheduled_events=events)
    return config


def prepare_state(action: str, state_dir: str, instance_id: str) -> None:
    """`start`: the state an earlier boot of this instance left after a handled stop."""
    if action != "start":
        return
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    stopped = datetime.now(timezone.utc) - timedelta(minutes=10)
    stamp = stopped.strftime("%Y-%m-%dT%H:%M:%SZ")
    record = {
        "tracker": "spot",
        "notice": {"action": "stop", "time": stamp, "source": "instance-action"},
        "first_seen": stamp,
        "deadline": stamp,
        "done": True,
        "steps": [],
    }
    document = {
        "version": FORMAT_VERSION,
        "boot_id": EARLIER_BOOT,
        "instance_id": instance_id,
        "trackers": {},
        "responses": {"spot#1": record},
    }
    with open(os.path.join(state_dir, STATE_FILE), "w", encoding="utf-8") as handle:
        json.dump(document, handle)


def raise_signal(
    sim: ImdsSimulator, action: str, lead: float, announce: Callable[[], None]
) -> Optional[str]:
    """Raise the rehearsed signal; what to print about it (None: nothing is raised, as for
    `start`, whose signal is the daemon's start itself). `announce`: a shutdown announced,
    as logind would."""
    if action == "shutdown":
        announce()
        return "shutdown announced (simulated: no lock is taken, nothing shuts down)"
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


def deadline_words(action: str, config: Config) -> str:
    if action == "hibernate":
        return f"hibernate.budget {config.hibernate.budget:g} s after detection"
    if action == "shutdown":
        return (
            f"announced + shutdown.budget {config.shutdown.budget:g} s - deadline_margin "
            f"{config.deadline_margin:g} s"
        )
    if action == "asg-terminate":
        return (
            f"first seen + autoscaling.budget {config.autoscaling.budget:g} s - deadline_margin"
        )
    if action in SCHEDULED_CODES:
        return f"NotBefore - deadline_margin {config.deadline_margin:g} s"
    if action in ("rebalance", "start"):
        return "none of its own: each hook gets its timeout"
    return f"notice time - deadline_margin {config.deadline_margin:g} s"
