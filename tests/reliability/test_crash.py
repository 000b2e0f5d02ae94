"""Crash consistency: `kill -9` the real daemon (`python -m spotwatch run`) at each step of a
response and in the middle of state writes; a restarted daemon finishes the response, re-runs
the step that was interrupted and none that finished, and state.json is always whole JSON.

Under systemd the unit's control group takes the hooks down with the daemon; here the test
kills the interrupted hook's process group itself, to stand for that.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import time
from pathlib import Path
from typing import Any, Dict

import pytest
from relsupport import LONG, DaemonProcess, base_config, lines, record_stats, wait_for, write_config
from testkit import response_record

from spotwatch.simulator.imds import ImdsSimulator

GATED_HOOK = """#!/bin/sh
# $1 name, $2 output file, $3 gates folder: say we started, wait for our gate, say we ended.
echo "start $1 $$" >> "$2"
while [ ! -e "$3/$1" ]; do sleep 0.02; done
echo "end $1" >> "$2"
"""


@pytest.fixture
def sim():
    with ImdsSimulator() as simulator:
        yield simulator


def read_state(state_dir: Path) -> Dict[str, Any]:
    """state.json, which must always parse as a whole spotwatch state file."""
    data = json.loads((state_dir / "state.json").read_text())
    assert isinstance(data, dict) and data["version"] == 1
    assert isinstance(data["trackers"], dict) and isinstance(data["responses"], dict)
    return data


def steps(state_dir: Path) -> Dict[str, str]:
    if not (state_dir / "state.json").exists():
        return {}
    record = response_record(read_state(state_dir))
    return {s["name"]: s["status"] for s in record.get("steps", [])}


def done(state_dir: Path) -> bool:
    try:
        return bool(response_record(read_state(state_dir)).get("done"))
    except (OSError, ValueError):
        return False


def polled_since(state_dir: Path, moment: float) -> bool:
    """The daemon polled after `moment` (so its signal handlers are in place)."""
    try:
        return (state_dir / "poll.json").stat().st_mtime > moment
    except OSError:
        return False


def known(state_dir: Path) -> Any:
    return (read_state(state_dir)["trackers"].get("spot") or {}).get("known")


def kill_group_of(out: Path, name: str) -> None:
    for line in lines(out):
        parts = line.split()
        if parts[:2] == ["start", name]:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(parts[2]), signal.SIGKILL)


@pytest.mark.parametrize("kill_during", ["h1", "h2", "h3", "after"])
def test_kill_9_at_each_step_then_restart(tmp_path: Path, sim: ImdsSimulator, kill_during: str):
    script = tmp_path / "gated.sh"
    script.write_text(GATED_HOOK)
    out, gates, state_dir = tmp_path / "out", tmp_path / "gates", tmp_path / "state"
    gates.mkdir()
    names = ["h1", "h2", "h3"]
    hooks = [
        {"name": n, "command": ["/bin/sh", str(script), n, str(out), str(gates)], "order": i}
        for i, n in enumerate(names)
    ]
    config = write_config(tmp_path / "config.yaml", base_config(state_dir, sim.endpoint, hooks))
    daemon = DaemonProcess(config, tmp_path / "daemon.log")
    try:
        sim.raise_notice("terminate", 120)
        for name in names:
            if name == kill_during:
                break
            wait_for(lambda n=name: f"start {n}" in " ".join(lines(out)))
            (gates / name).touch()
            wait_for(lambda n=name: steps(state_dir).get(f"hook:{n}") == "ok")
        if kill_during == "after":
            wait_for(lambda: done(state_dir))
        else:
            wait_for(lambda: steps(state_dir).get(f"hook:{kill_during}") == "running")
            wait_for(lambda: f"start {kill_during}" in " ".join(lines(out)))
    finally:
        daemon.kill()
    if kill_during != "after":
        kill_group_of(out, kill_during)
    before = steps(state_dir)  # whole JSON right after the kill
    finished = [n for n in names if before.get(f"hook:{n}") == "ok"]

    moment = time.time()
    restarted = DaemonProcess(config, tmp_path / "daemon.log")
    try:
        for name in names:
            (gates / name).touch()
        wait_for(lambda: done(state_dir), timeout=20)
        wait_for(lambda: polled_since(state_dir, moment))
    finally:
        assert restarted.stop() == 0
    text = " ".join(lines(out))
    for name in names:
        starts = text.count(f"start {name} ")
        if name in finished:
            assert starts == 1, f"{name} finished before the kill and ran again: {lines(out)}"
        elif name == kill_during:
            assert starts == 2, f"the interrupted {name} was not run again: {lines(out)}"
        else:
            assert starts == 1, lines(out)
        assert text.count(f"end {name}") == 1
    assert set(steps(state_dir).values()) == {"ok"}
    assert "Traceback" not in restarted.log()


def test_a_superseded_response_killed_with_the_daemon_is_ended_after_the_restart(
    tmp_path: Path, sim: ImdsSimulator
) -> None:
    """A `stop` notice's hook runs; the notice turns `terminate` (the stop response is
    superseded: it starts nothing more, its hook goes on); kill -9. The restarted daemon,
    the terminate notice still showing, ends the stop response for good (`done`, its
    unfinished step `skipped`, superseded) instead of leaving it `responding` forever: no
    restart can take up a notice that is no longer there (CONTRACT §3, §4). (Before: its
    record stayed not done after the restart.)"""
    script = tmp_path / "gated.sh"
    script.write_text(GATED_HOOK)
    out, gates, state_dir = tmp_path / "out", tmp_path / "gates", tmp_path / "state"
    gates.mkdir()
    hook = {"name": "h1", "command": ["/bin/sh", str(script), "h1", str(out), str(gates)]}
    hooks = [{**hook, "actions": ["stop"]}]
    config = write_config(tmp_path / "config.yaml", base_config(state_dir, sim.endpoint, hooks))
    daemon = DaemonProcess(config, tmp_path / "daemon.log")
    try:
        sim.raise_notice("stop", 120)
        wait_for(lambda: steps(state_dir).get("hook:h1") == "running")
        sim.raise_notice("terminate", 120)
        wait_for(lambda: response_record(read_state(state_dir))["notice"]["action"] == "terminate")
        wait_for(lambda: done(state_dir))  # the terminate response: no hook of its own
    finally:
        daemon.kill()
    kill_group_of(out, "h1")
    moment = time.time()
    restarted = DaemonProcess(config, tmp_path / "daemon.log")
    try:
        wait_for(lambda: polled_since(state_dir, moment))
    finally:
        assert restarted.stop() == 0
    (stop,) = [
        r for r in read_state(state_dir)["responses"].values() if r["notice"]["action"] == "stop"
    ]
    assert stop["done"] and stop["why_ended"] == "superseded by a terminate notice", stop
    assert {s["name"]: s["status"] for s in stop["steps"]} == {"hook:h1": "skipped"}


ROUNDS = 60 if LONG else 6


def test_kill_9_during_state_writes(tmp_path: Path, sim: ImdsSimulator) -> None:
    """Many quick hooks, each step written to state.json (temp file, rename) as it starts and
    ends; SIGKILL at random moments. Every time: state.json is whole, no step that was
    recorded finished runs again after the restart, and the response completes."""
    rng = random.Random(int(os.environ.get("SPOTWATCH_SEED", "20261122")))
    state_dir = tmp_path / "state"
    killed_mid_response = 0
    for round_ in range(ROUNDS):
        out = tmp_path / f"out-{round_}"
        hooks = [
            {"name": f"q{i:02d}", "command": f"echo q{i:02d} >> {out}", "order": i}
            for i in range(40)
        ]
        config = write_config(tmp_path / "config.yaml", base_config(state_dir, sim.endpoint, hooks))
        sim.clear_instance_action()
        daemon = DaemonProcess(config, tmp_path / "daemon.log")
        try:
            wait_for(lambda: (state_dir / "poll.json").exists() and read_state(state_dir))
            # A new notice each round: the last one must be gone for 3 polls first.
            wait_for(
                lambda: (read_state(state_dir)["trackers"].get("spot") or {}).get("known") is None
            )
            sim.raise_notice("terminate", 120 + round_)
            wait_for(lambda o=out: len(lines(o)) >= 1)
            os.kill(daemon.process.pid, 0)
            time.sleep(rng.uniform(0.0, 0.1))
        finally:
            daemon.kill()
        before = steps(state_dir)  # must parse, whole
        finished = {n.split(":", 1)[1] for n, s in before.items() if s == "ok"}
        killed_mid_response += len(finished) < len(hooks)
        moment = time.time()
        restarted = DaemonProcess(config, tmp_path / "daemon.log")
        try:
            wait_for(lambda: done(state_dir), timeout=30)
            wait_for(lambda m=moment: polled_since(state_dir, m))
        finally:
            assert restarted.stop() == 0
        ran = lines(out)
        for hook in hooks:
            count = ran.count(hook["name"])
            assert count >= 1, f"round {round_}: {hook['name']} never ran"
            if hook["name"] in finished:
                assert count == 1, f"round {round_}: {hook['name']} finished, then ran again"
            else:
                assert count <= 2
        leftovers = [p.name for p in state_dir.iterdir() if p.name.startswith(".")]
        assert not leftovers, leftovers  # the restart removed what the kill left behind
    record_stats("crash-writes", rounds=ROUNDS, killed_mid_response=killed_mid_response)
    assert killed_mid_response >= ROUNDS // 3, "the kills missed the responses"
