"""One end, one response (CONTRACT §7), where a scheduled `instance-stop` and a Spot `stop`
meet: a canceled response ended nothing, and the earlier deadline governs however either
notice moves.

The real daemon in this process (polled by the test), the IMDS simulator, real hook
processes, the fake ECS agent and moto over HTTP."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Dict, List

from awshelpers import EcsWorld, FakeAgent
from daemonworld import (
    AT_ONCE,
    ahead,
    config_for,
    poll_until,
    ran,
    recording_hook,
    records,
    respond_then_cancel,
    started,
    steps_of,
)

from spotwatch.config.schema import Config
from spotwatch.daemon.shell import Daemon
from spotwatch.simulator.imds import ImdsSimulator


def two_stage_config(tmp_path: Path, imds: ImdsSimulator, agent: FakeAgent) -> Config:
    """Stop hooks `notify` (order 0, 3 s) then `checkpoint` (order 1); a cancel hook."""
    base = config_for(tmp_path, imds, agent, hooked=("cancel",), scheduled_events=AT_ONCE)
    hooks = (
        recording_hook(tmp_path, "stop", name="notify", then="sleep 3", order=0),
        recording_hook(tmp_path, "stop", name="checkpoint", order=1),
        *base.hooks,
    )
    return Config(**{**base.__dict__, "hooks": hooks})


def by_hook(tmp_path: Path) -> Dict[str, List[Dict[str, Any]]]:
    found: Dict[str, List[Dict[str, Any]]] = {}
    for entry in ran(tmp_path):
        found.setdefault(entry["SPOTWATCH_HOOK"], []).append(entry)
    return found


def spot_record(daemon: Daemon) -> Dict[str, Any]:
    (record,) = [r for r in records(daemon).values() if r["tracker"] == "spot"]
    return record


def test_a_canceled_scheduled_stop_does_not_absorb_a_later_spot_stop(
    tmp_path: Path, imds: ImdsSimulator, world: EcsWorld, agent: FakeAgent
) -> None:
    """The event's response runs and is canceled (ECS back to ACTIVE); a Spot stop that comes
    later gets a whole response of its own: its hook runs, ECS is drained again.
    (Before: the canceled record counted as the end's response, the Spot stop joined it and
    ran no hook, no drain.)"""
    agent.serve(world)
    daemon = started(
        config_for(tmp_path, imds, agent, hooked=("stop", "cancel"), scheduled_events=AT_ONCE)
    )
    event_id = imds.scheduled.add("instance-stop", ahead(60))
    try:
        respond_then_cancel(daemon, imds, event_id, tmp_path)
        assert world.instance_status() == "ACTIVE"
        imds.set_instance_action("stop", ahead(60))
        poll_until(daemon, lambda: len(ran(tmp_path)) == 3, timeout=10)
        daemon.responder.wait(10)
    finally:
        daemon.shutdown()
    actions = [(h["SPOTWATCH_ACTION"], h["SPOTWATCH_SOURCE"]) for h in ran(tmp_path)]
    assert actions == [
        ("stop", "scheduled-event"),
        ("cancel", "scheduled-event"),
        ("stop", "instance-action"),
    ]
    assert steps_of(spot_record(daemon)) == {"ecs:drain": "ok", "hook:stop": "ok"}
    assert not (daemon.store.value("joins") or {})
    assert world.instance_status() == "DRAINING"


def test_a_cancel_while_a_spot_stop_has_joined_runs_what_the_canceled_response_left(
    tmp_path: Path, imds: ImdsSimulator, world: EcsWorld, agent: FakeAgent
) -> None:
    """The event's response runs `notify`; a Spot stop joins it; the event is canceled while
    `notify` runs. `notify` finishes (once); the Spot stop's response at once runs what the
    canceled one never started: `checkpoint`, with the Spot notice's environment. The cancel
    puts nothing back while the Spot stop stands: the instance stays DRAINING.
    (Before: `checkpoint` was skipped and never ran, and the cancel set ECS to ACTIVE.)"""
    agent.serve(world)
    daemon = started(two_stage_config(tmp_path, imds, agent))
    event_id = imds.scheduled.add("instance-stop", ahead(60))
    try:
        poll_until(daemon, lambda: "notify" in by_hook(tmp_path))
        imds.set_instance_action("stop", ahead(60))
        poll_until(daemon, lambda: daemon.store.value("joins"))
        imds.scheduled.set_state(event_id, "canceled")
        poll_until(daemon, lambda: {"checkpoint", "cancel"} <= set(by_hook(tmp_path)))
        poll_until(daemon, lambda: not daemon.responder.running(), timeout=20)
    finally:
        daemon.shutdown()
    hooks = by_hook(tmp_path)
    assert [len(hooks[name]) for name in ("notify", "checkpoint", "cancel")] == [1, 1, 1]
    assert hooks["notify"][0]["SPOTWATCH_SOURCE"] == "scheduled-event"
    assert hooks["checkpoint"][0]["SPOTWATCH_SOURCE"] == "instance-action"
    assert steps_of(spot_record(daemon))["hook:checkpoint"] == "ok"
    assert world.instance_status() == "DRAINING"


def test_the_earlier_deadline_governs_when_the_first_notice_moves_later(
    tmp_path: Path, imds: ImdsSimulator, world: EcsWorld, agent: FakeAgent
) -> None:
    """The event (NotBefore 60 s ahead) responds; a Spot stop 30 s ahead joins it: the
    earlier deadline governs. Then the event's NotBefore moves 60 s later: the deadline
    stays the Spot notice's, as `checkpoint` (started after the move) is told.
    (Before: the first response's own moved notice replaced the earlier deadline.)"""
    agent.serve(world)
    daemon = started(two_stage_config(tmp_path, imds, agent))
    event_id = imds.scheduled.add("instance-stop", ahead(60))
    spot_time = ahead(30)
    try:
        poll_until(daemon, lambda: "notify" in by_hook(tmp_path))
        imds.set_instance_action("stop", spot_time)
        poll_until(daemon, lambda: daemon.store.value("joins"))
        imds.scheduled.move(event_id, ahead(120))
        poll_until(daemon, lambda: "checkpoint" in by_hook(tmp_path))
        daemon.responder.wait(10)
    finally:
        daemon.shutdown()
    (checkpoint,) = by_hook(tmp_path)["checkpoint"]
    assert int(checkpoint["SPOTWATCH_DEADLINE"]) == int(spot_time.timestamp()) - 1
    first = next(r for r in records(daemon).values() if r["tracker"] != "spot")
    assert _epoch(first["deadline"]) == spot_time.timestamp() - 1


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
