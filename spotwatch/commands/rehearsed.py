"""The actions `rehearse` knows, the built-in demo config it runs on when no config file
exists, and the state a rehearsal of `start` begins from. What each action raises on each
cloud is the cloud's business (`Cloud.rehearse`, clouds/<cloud>/).
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Optional

from spotwatch.config.schema import (
    DEFAULT_CONFD_DIR,
    DEFAULT_CONFIG_PATH,
    Config,
    HookSpec,
    ImdsSettings,
)
from spotwatch.state.files import STATE_FILE
from spotwatch.state.schema import FORMAT_VERSION

# Every cloud's `rehearsals` are among these (tests/clouds/test_registry.py); `shutdown` is
# every cloud's (CONTRACT §8: logind announces it, whatever the cloud), played by the command.
ACTIONS = (
    "terminate",
    "stop",
    "hibernate",
    "rebalance",
    "asg-terminate",
    "reboot",
    "maintenance",
    "start",
    "shutdown",
)
SHUTDOWN = "shutdown"
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


# Every action the demo can rehearse (an Auto Scaling termination is a terminate).
DEMO_ACTIONS = (
    "terminate",
    "stop",
    "hibernate",
    "rebalance",
    "reboot",
    "maintenance",
    "start",
    "shutdown",
)
DEMO_HOOK = (
    'echo "demo hook: $SPOTWATCH_ACTION notice for $SPOTWATCH_NOTICE_TIME,'
    ' $SPOTWATCH_SECONDS_LEFT s left"; env | grep ^SPOTWATCH_ | sort'
)


def has_config_file(path: Optional[str]) -> bool:
    """A named file always counts (missing: a config error later); else the default file or
    any conf.d drop-in."""
    if path:
        return True
    if os.path.exists(DEFAULT_CONFIG_PATH):
        return True
    try:
        return any(
            n.endswith(".yaml") and not n.startswith(".") for n in os.listdir(DEFAULT_CONFD_DIR)
        )
    except OSError:
        return False


def demo_config() -> Config:
    """No config anywhere: one hook that prints its environment, for every action."""
    return Config(
        deadline_margin=10.0,
        imds=ImdsSettings(user_data=False),
        hooks=(
            HookSpec(
                name="demo",
                command=DEMO_HOOK,
                actions=DEMO_ACTIONS,
                timeout=30.0,
            ),
        ),
        ecs=replace(Config().ecs, enabled=False),
        sources=("built-in demo config",),
    )
