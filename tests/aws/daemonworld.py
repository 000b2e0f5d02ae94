"""The real daemon in this process, polled by the test, against the IMDS simulator, the fake
ECS agent and moto: the helpers the end-to-end response tests share (scheduled events,
cancels, starts, one end one response)."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from awshelpers import FakeAgent

from spotwatch.config.schema import (
    Config,
    EcsSettings,
    HookSpec,
    ImdsSettings,
    ScheduledEventsSettings,
)
from spotwatch.daemon.shell import Daemon
from spotwatch.daemon.wiring import daemon_parts
from spotwatch.simulator.imds import ImdsSimulator

# Each hook appends one JSON line: when it started and its SPOTWATCH_* environment.
RECORD = (
    'python3 -c \'import json,os,time; print(json.dumps({"t": time.time(), '
    '**{k: v for k, v in os.environ.items() if k.startswith("SPOTWATCH_")}}))\' >> {out}'
)
ALL_ACTIONS = ("stop", "reboot", "maintenance", "cancel", "start")
AT_ONCE = ScheduledEventsSettings(poll_interval=0.1, lead=120.0)  # NotBefore 60 s away


def recording_hook(
    out: Path, action: str, *, name: str = "", then: str = "", **extra: Any
) -> HookSpec:
    """A hook (named after its action unless `name` is given) that records its start in
    `out`/hooks.jsonl with its name, then runs `then`."""
    record = RECORD.replace("{out}", str(out / "hooks.jsonl"))
    command = f"SPOTWATCH_HOOK={name or action} {record}" + (f"; {then}" if then else "")
    return HookSpec(name=name or action, command=command, actions=(action,), **extra)


def config_for(
    tmp_path: Path,
    imds: ImdsSimulator,
    agent: Optional[FakeAgent],
    *,
    hooked: Sequence[str] = ALL_ACTIONS,
    **changes: object,
) -> Config:
    """Fast polls, a recording hook for each action in `hooked`, ECS through `agent` (no
    agent: ECS off)."""
    ecs = EcsSettings(enabled=False)
    if agent is not None:
        ecs = EcsSettings(agent_url=agent.url, stop="none", final_stop=False)
    base = Config(
        poll_interval=0.1,
        deadline_margin=1.0,
        state_dir=str(tmp_path / "state"),
        imds=ImdsSettings(endpoint=imds.endpoint, user_data=False),
        hooks=tuple(recording_hook(tmp_path, action) for action in hooked),
        ecs=ecs,
        scheduled_events=ScheduledEventsSettings(poll_interval=0.1, lead=2.0),
    )
    return Config(**{**base.__dict__, **changes})  # type: ignore[arg-type]


def ran(tmp_path: Path) -> List[Dict[str, Any]]:
    """What the recording hooks wrote, in order."""
    path = tmp_path / "hooks.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def poll_until(daemon: Daemon, done: Callable[[], Any], timeout: float = 15.0) -> None:
    assert daemon.watcher is not None
    end = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < end, "timed out"
        daemon.watcher.poll_once()
        time.sleep(0.1)


def started(config: Config) -> Daemon:
    daemon = Daemon(config, parts=daemon_parts(config))
    daemon.prepare()
    return daemon


def ahead(seconds: float) -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=seconds)


def records(daemon: Daemon) -> Dict[str, Dict[str, Any]]:
    """Every response record of the daemon's state, by key."""
    return dict(daemon.store.value("responses") or {})


def steps_of(record: Dict[str, Any]) -> Dict[str, str]:
    return {s["name"]: s["status"] for s in record.get("steps", [])}


def as_an_earlier_boot(tmp_path: Path) -> None:
    """The instance stopped (or rebooted) and started: the state file is an earlier boot's."""
    state = tmp_path / "state" / "state.json"
    document = json.loads(state.read_text())
    document["boot_id"] = "an-earlier-boot"
    state.write_text(json.dumps(document))


def is_cancel(record: Dict[str, Any]) -> bool:
    return bool(record["notice"]["action"] == "cancel")


def respond_then_cancel(daemon: Daemon, imds: ImdsSimulator, event_id: str, out: Path) -> None:
    """The event's response runs (its first hook records); then the event is canceled and
    the daemon is polled until the cancel response has ended."""
    poll_until(daemon, lambda: len(ran(out)) == 1)
    daemon.responder.wait(10)
    imds.scheduled.set_state(event_id, "canceled")
    poll_until(daemon, lambda: any(is_cancel(r) for r in records(daemon).values()))
    daemon.responder.wait(20)


def cancel_of_a_stop_event(daemon: Daemon, imds: ImdsSimulator, out: Path) -> Dict[str, Any]:
    """An instance-stop event 60 s ahead is responded to, then canceled; the daemon stops.
    Returns the record of the cancel response."""
    event_id = imds.scheduled.add("instance-stop", ahead(60))
    try:
        respond_then_cancel(daemon, imds, event_id, out)
    finally:
        daemon.shutdown()
    (cancel,) = [r for r in records(daemon).values() if is_cancel(r)]
    return cancel


def through_a_spot_stop(config: Config, imds: ImdsSimulator, out: Path) -> None:
    """A daemon handles a Spot stop notice (its first hook records), stops, and the instance
    goes away: the state file is then an earlier boot's."""
    daemon = started(config)
    imds.set_instance_action("stop", ahead(60))
    try:
        poll_until(daemon, lambda: len(ran(out)) == 1)
        daemon.responder.wait(10)
    finally:
        daemon.shutdown()
    imds.clear_instance_action()
    as_an_earlier_boot(out)
