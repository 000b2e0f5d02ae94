"""An Auto Scaling termination, end to end in process: the real IMDS simulator, moto's
Auto Scaling behind a recording endpoint (which answers the lifecycle calls moto lacks),
real hook processes and the real state directory."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Iterator, List, Tuple

import pytest
from asgworld import MUTATING, RecordingAutoscaling, build_group
from awshelpers import context, notice_in

from spotwatch.config.schema import (
    AutoscalingSettings,
    Config,
    EcsSettings,
    HookSpec,
    ImdsSettings,
)
from spotwatch.daemon.shell import Daemon
from spotwatch.daemon.wiring import aws_clients, daemon_parts
from spotwatch.host.notify import Notifier
from spotwatch.parts.autoscaling.lifecycle import Lifecycle
from spotwatch.simulator.imds import ImdsSimulator

POLL = 0.2


@pytest.fixture
def recorder(moto: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[RecordingAutoscaling]:
    endpoint = RecordingAutoscaling(moto)
    monkeypatch.setenv("AWS_ENDPOINT_URL_AUTO_SCALING", endpoint.url)
    try:
        yield endpoint
    finally:
        endpoint.stop()


def timed_hook(name: str, out: Path, *, sleep: float = 0.0, status: int = 0) -> HookSpec:
    """A hook that writes '<name> start|end <wall time>' lines and the source it was given."""
    script = (
        f'echo "{name} start $(date +%s.%N) $SPOTWATCH_SOURCE" >> {out}; sleep {sleep}; '
        f'echo "{name} end $(date +%s.%N)" >> {out}; exit {status}'
    )
    return HookSpec(name=name, command=script, actions=("terminate",), timeout=30.0)


def events(out: Path) -> List[Tuple[str, str, float]]:
    if not out.exists():
        return []
    found = []
    for line in out.read_text().splitlines():
        name, what, wall = line.split()[:3]
        found.append((name, what, float(wall)))
    return found


Make = Callable[..., Tuple[Daemon, ImdsSimulator]]


@pytest.fixture
def daemon(tmp_path: Path, recorder: RecordingAutoscaling) -> Iterator[Make]:
    made: List[Tuple[Daemon, ImdsSimulator]] = []

    def make(
        hooks: Tuple[HookSpec, ...],
        *,
        heartbeat: int = 3,
        dry_run: bool = False,
        budget: float = 60.0,
        detach: bool = False,
    ) -> Tuple[Daemon, ImdsSimulator]:
        instance_id = build_group(heartbeat_timeout=heartbeat)
        sim = ImdsSimulator(instance_id=instance_id).start()
        config = Config(
            poll_interval=POLL,
            deadline_margin=1.0,
            dry_run=dry_run,
            state_dir=str(tmp_path / "state"),
            imds=ImdsSettings(endpoint=sim.endpoint, timeout=0.3, user_data=False),
            ecs=EcsSettings(enabled=False),
            autoscaling=AutoscalingSettings(enabled=True, budget=budget, detach=detach),
            hooks=hooks,
        )
        process = Daemon(config, parts=daemon_parts(config), notifier=Notifier(""))
        process.prepare()
        made.append((process, sim))
        return process, sim

    yield make
    for process, sim in made:
        process.shutdown()
        sim.stop()


def poll_until(process: Daemon, done: Callable[[], Any], timeout: float = 30.0) -> None:
    assert process.watcher is not None
    end = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < end, "timed out"
        process.watcher.poll_once()
        time.sleep(POLL)


def settled(process: Daemon) -> Callable[[], bool]:
    return lambda: not process.responder.running()


def test_heartbeats_keep_the_hook_alive_and_completion_follows_the_hooks(
    daemon: Make, recorder: RecordingAutoscaling, tmp_path: Path
) -> None:
    out = tmp_path / "hooks.log"
    process, sim = daemon((timed_hook("checkpoint", out, sleep=5),), heartbeat=3)
    poll_until(process, lambda: True)
    sim.set_asg_state("Terminated")
    raised = time.time()
    poll_until(process, lambda: events(out))
    poll_until(process, settled(process))
    (
        (
            _,
            _,
            started,
        ),
        (_, _, ended),
    ) = [e for e in events(out)]
    first_line = out.read_text().splitlines()[0]
    assert first_line.endswith("target-lifecycle-state")
    beats = recorder.of("RecordLifecycleActionHeartbeat")
    completes = recorder.of("CompleteLifecycleAction")
    # A 5 s hook outlives the 3 s HeartbeatTimeout: a heartbeat every second keeps it alive.
    assert len(beats) >= 3, beats
    gaps = [b[0] - a[0] for a, b in zip(beats, beats[1:])]
    assert max(gaps) < 3.0
    assert all(started <= b[0] <= ended + 1.5 for b in beats)
    assert len(completes) == 1 and completes[0][0] >= ended
    params = completes[0][2]
    assert params["LifecycleActionResult"] == "CONTINUE"
    assert (params["AutoScalingGroupName"], params["LifecycleHookName"]) == ("web", "drain")
    assert params["InstanceId"] == sim.instance_id
    print(
        f"ASG notice -> first hook {started - raised:.3f} s; {len(beats)} heartbeats over "
        f"{ended - started:.1f} s"
    )


def test_a_failed_hook_still_completes_the_lifecycle_action(
    daemon: Make, recorder: RecordingAutoscaling, tmp_path: Path
) -> None:
    out = tmp_path / "hooks.log"
    process, sim = daemon((timed_hook("broken", out, status=3),))
    poll_until(process, lambda: True)
    sim.set_asg_state("Terminated")
    poll_until(process, lambda: events(out))
    poll_until(process, settled(process))
    hook_end = events(out)[-1][2]
    completes = recorder.of("CompleteLifecycleAction")
    assert len(completes) == 1 and completes[0][0] >= hook_end


@pytest.mark.parametrize("first", ["spot", "asg"])
def test_a_spot_notice_and_the_group_termination_run_the_hooks_once(
    daemon: Make, recorder: RecordingAutoscaling, tmp_path: Path, first: str
) -> None:
    out = tmp_path / "hooks.log"
    process, sim = daemon((timed_hook("checkpoint", out, sleep=2),))
    poll_until(process, lambda: True)
    raise_first, raise_second = (
        (lambda: sim.raise_notice("terminate", 60), lambda: sim.set_asg_state("Terminated"))
        if first == "spot"
        else (lambda: sim.set_asg_state("Terminated"), lambda: sim.raise_notice("terminate", 60))
    )
    raise_first()
    poll_until(process, lambda: events(out))
    raise_second()
    poll_until(process, lambda: len(process.store.value("joins") or {}) == 1)
    poll_until(process, settled(process))
    assert [what for _, what, _ in events(out)] == ["start", "end"]  # once, for one end
    completes = recorder.of("CompleteLifecycleAction")
    assert len(completes) == 1 and completes[0][0] >= events(out)[-1][2]


def test_a_spot_stop_never_detaches_an_instance_the_group_is_terminating(
    daemon: Make, recorder: RecordingAutoscaling, tmp_path: Path
) -> None:
    """With `autoscaling.detach`, the group's termination is under way (its checkpoint
    runs) when a Spot `stop` notice comes: another end, so a response of its own, but no
    DetachInstances (CONTRACT §7: detach is left out when the group is already terminating
    the instance; AWS refuses it in Terminating:Wait). (Before: DetachInstances at once.)"""
    out = tmp_path / "hooks.log"
    process, sim = daemon((timed_hook("checkpoint", out, sleep=1),), detach=True)
    poll_until(process, lambda: True)
    sim.set_asg_state("Terminated")
    poll_until(process, lambda: events(out))
    sim.raise_notice("stop", 60)
    poll_until(process, lambda: len(process.store.value("responses") or {}) == 2)
    poll_until(process, settled(process))
    assert recorder.of("DetachInstances") == []
    spot = [r for r in (process.store.value("responses") or {}).values() if r["tracker"] == "spot"]
    assert [s["name"] for s in spot[0]["steps"] if "detach" in s["name"]] == []


def test_dry_run_makes_no_mutating_call(
    daemon: Make, recorder: RecordingAutoscaling, tmp_path: Path
) -> None:
    out = tmp_path / "hooks.log"
    process, sim = daemon((timed_hook("checkpoint", out, sleep=2),), dry_run=True)
    poll_until(process, lambda: True)
    sim.set_asg_state("Terminated")
    poll_until(process, lambda: events(out))
    poll_until(process, settled(process))
    assert not [a for a in recorder.actions() if a in MUTATING]
    assert "DescribeLifecycleHooks" in recorder.actions()  # reading what would be done is fine


def test_after_a_restart_the_lifecycle_action_still_waits_for_the_spot_response(
    recorder: RecordingAutoscaling, tmp_path: Path
) -> None:
    """A Spot terminate's checkpoint runs; the group's termination joins that response. The
    daemon stops in the middle of the checkpoint (interrupted) and starts again: the Spot
    response resumes, and CompleteLifecycleAction still comes only after its checkpoint.
    (Before: trackers resumed in sorted key order, `autoscaling` before `spot`, and the
    joined response, whose wait had been recorded done, completed the lifecycle action
    while the checkpoint ran again.)"""
    out = tmp_path / "hooks.log"
    instance_id = build_group(heartbeat_timeout=30)
    with ImdsSimulator(instance_id=instance_id) as sim:
        config = Config(
            poll_interval=POLL,
            deadline_margin=1.0,
            state_dir=str(tmp_path / "state"),
            imds=ImdsSettings(endpoint=sim.endpoint, timeout=0.3, user_data=False),
            ecs=EcsSettings(enabled=False),
            autoscaling=AutoscalingSettings(enabled=True, budget=120.0),
            hooks=(timed_hook("checkpoint", out, sleep=3),),
        )

        def daemon() -> Daemon:
            made = Daemon(
                config, parts=daemon_parts(config), notifier=Notifier(""), shutdown_grace=0.2
            )
            made.prepare()
            return made

        first = daemon()
        sim.raise_notice("terminate", 120)
        poll_until(first, lambda: events(out))
        sim.set_asg_state("Terminated")
        poll_until(first, lambda: first.store.value("joins"))
        first.shutdown()
        assert not recorder.of("CompleteLifecycleAction")
        again = daemon()
        try:
            poll_until(again, lambda: len(events(out)) >= 3)  # the checkpoint again
            poll_until(again, settled(again))
        finally:
            again.shutdown()
    starts = [wall for _, what, wall in events(out) if what == "start"]
    ends = [wall for _, what, wall in events(out) if what == "end"]
    assert len(starts) == 2 and len(ends) == 1, events(out)
    (complete,) = recorder.of("CompleteLifecycleAction")
    assert complete[0] >= ends[-1]


def test_a_new_response_never_inherits_the_lifecycle_hook_lookup_of_an_ended_one(
    recorder: RecordingAutoscaling,
) -> None:
    """A response finds no terminating hook (its instance is in no group) and ends without
    completing; a later response whose clock object lands where the ended one's was (CPython
    reuses the memory) finds the group's hook all the same.
    (Before: lookups were cached by id() of the response's clock and never dropped unless the
    completion ran: the new response got the old "no hook", so no heartbeat, no completion.)"""
    in_group = build_group()
    lifecycle = Lifecycle(aws_clients(Config()), AutoscalingSettings(enabled=True))
    notice = notice_in(600)
    for _ in range(20):  # until the new clock is where the ended one's was (about 1 in 2)
        ended = context(notice, instance_id="i-00000000000000000")
        assert lifecycle.hook(ended) is None
        where = id(ended.clock)
        del ended
        fresh = context(notice, instance_id=in_group)
        if id(fresh.clock) == where:
            break
    found = lifecycle.hook(fresh)
    assert found is not None and (found.group, found.name) == ("web", "drain")
