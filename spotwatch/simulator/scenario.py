"""Scenario files for `spotwatch simulate-imds --scenario FILE`: a timeline played on the
simulator. JSON (the simulator uses the standard library only), an object with a list:

    {"steps": [
      {"at": 0,  "event": "instance-reboot", "id": "instance-event-1", "lead": 600},
      {"at": 5,  "notice": "stop", "lead": 120},
      {"at": 20, "move": "spot", "lead": 60},
      {"at": 30, "fault": "status", "status": 500, "path": "meta-data/spot", "count": 3},
      {"at": 40, "cancel": "instance-event-1"},
      {"at": 50, "withdraw": "spot"}
    ]}

`at`: seconds after the start. One verb per step:
- `notice`: a Spot notice (terminate, stop, hibernate) or `rebalance`, `lead` seconds ahead;
- `event`: a scheduled event of that code (optional `id`), NotBefore `lead` seconds ahead;
- `move`: `spot` or an event id: its time becomes `lead` seconds from then;
- `withdraw`: `spot`, `rebalance` or an event id: gone from IMDS;
- `cancel` / `complete`: an event id: its State becomes canceled / completed;
- `fault`: `status` (with `status`), `hang` (with `seconds`) or `reset`, for `count` requests
  (default 1) under `path` (default every path).
"""

import contextlib
import json
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List, Optional

VERBS = ("notice", "event", "move", "withdraw", "cancel", "complete", "fault")
NOTICES = ("terminate", "stop", "hibernate", "rebalance")
CODES = (
    "instance-stop",
    "instance-retirement",
    "instance-reboot",
    "system-reboot",
    "system-maintenance",
)
FAULTS = ("status", "hang", "reset")


class ScenarioError(ValueError):
    """A scenario file that cannot be played; the message names the step."""


@dataclass(frozen=True)
class Step:
    at: float
    verb: str
    value: str
    fields: Dict[str, Any]

    def number(self, name: str, default: Optional[float] = None) -> float:
        value = self.fields.get(name, default)
        assert isinstance(value, (int, float))
        return float(value)


def _number(entry: Dict[str, Any], name: str, where: str, default: Optional[float]) -> None:
    value = entry.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ScenarioError(f"{where}.{name}: expected a number of seconds >= 0, got {value!r}")


def parse_scenario(text: str) -> List[Step]:
    try:
        data = json.loads(text)
    except ValueError as failure:
        raise ScenarioError(f"not JSON: {failure}") from None
    if not isinstance(data, dict) or not isinstance(data.get("steps"), list):
        raise ScenarioError('expected an object with a "steps" list')
    steps: List[Step] = []
    for index, entry in enumerate(data["steps"]):
        where = f"steps[{index}]"
        if not isinstance(entry, dict):
            raise ScenarioError(f"{where}: expected an object")
        verbs = [v for v in VERBS if v in entry]
        if len(verbs) != 1:
            raise ScenarioError(f"{where}: expected exactly one of {', '.join(VERBS)}")
        verb, value = verbs[0], entry[verbs[0]]
        unknown = set(entry) - {verb, "at", "lead", "id", "status", "seconds", "path", "count"}
        if unknown:
            raise ScenarioError(f"{where}: unknown key {sorted(unknown)[0]!r}")
        if not isinstance(value, str) or not value:
            raise ScenarioError(f"{where}.{verb}: expected a name")
        choices = {"notice": NOTICES, "event": CODES, "fault": FAULTS}.get(verb)
        if choices is not None and value not in choices:
            raise ScenarioError(f"{where}.{verb}: expected one of {', '.join(choices)}")
        _number(entry, "at", where, None)
        if verb in ("notice", "event", "move"):
            _number(entry, "lead", where, 120)
        if verb == "fault":
            _number(entry, "count", where, 1)
            if value == "status":
                _number(entry, "status", where, None)
            if value == "hang":
                _number(entry, "seconds", where, None)
        fields = {k: v for k, v in entry.items() if k not in (verb, "at")}
        steps.append(Step(float(entry["at"]), verb, value, fields))
    return sorted(steps, key=lambda s: s.at)


def load_scenario(path: str) -> List[Step]:
    try:
        with open(path, encoding="utf-8") as handle:
            return parse_scenario(handle.read())
    except OSError as failure:
        raise ScenarioError(f"cannot read {path}: {failure.strerror}") from None


def apply(sim: Any, step: Step) -> None:
    """Play one step on an `ImdsSimulator`."""
    ahead = datetime.now(timezone.utc) + timedelta(seconds=step.number("lead", 120))
    ahead = ahead.replace(microsecond=0)
    if step.verb == "notice":
        sim.raise_notice(step.value, step.number("lead", 120))
    elif step.verb == "event":
        sim.scheduled.add(step.value, ahead, event_id=step.fields.get("id"))
    elif step.verb == "move" and step.value == "spot":
        action = json.loads(sim.spot_notice() or "{}").get("action", "terminate")
        sim.set_instance_action(action, ahead)
    elif step.verb == "move":
        sim.scheduled.move(step.value, ahead)
    elif step.verb == "withdraw" and step.value == "spot":
        sim.clear_instance_action()
    elif step.verb == "withdraw" and step.value == "rebalance":
        sim.set_rebalance(None)
    elif step.verb == "withdraw":
        sim.scheduled.remove(step.value)
    elif step.verb in ("cancel", "complete"):
        sim.scheduled.set_state(step.value, "canceled" if step.verb == "cancel" else "completed")
    elif step.verb == "fault":
        count, path = int(step.number("count", 1)), str(step.fields.get("path", ""))
        if path and not path.startswith("/"):
            path = "/latest/" + path  # "meta-data/spot" is short for "/latest/meta-data/spot"
        if step.value == "status":
            sim.inject_status(int(step.number("status")), path=path, count=count)
        elif step.value == "hang":
            sim.inject_hang(step.number("seconds"), path=path, count=count)
        else:
            sim.inject_reset(path=path, count=count)


def play(sim: Any, steps: List[Step], stop: threading.Event) -> None:
    """Play the steps at their times (from now) until done or `stop` is set."""
    started = time.monotonic()
    for step in steps:
        if stop.wait(max(0.0, started + step.at - time.monotonic())):
            return
        with contextlib.suppress(KeyError):  # an event id not listed (any more): no change
            apply(sim, step)
