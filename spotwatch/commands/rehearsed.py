"""The actions `rehearse` knows, and the state a rehearsal of `start` begins from. What each
action raises on each cloud is the cloud's business (`Cloud.rehearse`, clouds/<cloud>/).
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone

from spotwatch.state.files import STATE_FILE
from spotwatch.state.schema import FORMAT_VERSION

# Every cloud's `rehearsals` are among these (tests/clouds/test_registry.py).
ACTIONS = (
    "terminate",
    "stop",
    "hibernate",
    "rebalance",
    "asg-terminate",
    "reboot",
    "maintenance",
    "start",
)
EARLIER_BOOT = "rehearsal-earlier-boot"


def default_lead(action: str) -> float:
    return 0.0 if action == "hibernate" else 120.0


def hook_action(action: str) -> str:
    """The action the hooks are told (an Auto Scaling termination is a `terminate`)."""
    return "terminate" if action == "asg-terminate" else action


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
