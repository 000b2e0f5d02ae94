"""Scenario files: the format is checked before anything is served, and a timeline plays on
the simulator in order (what IMDS answers changes at each step)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from spotwatch.simulator.imds import ImdsSimulator
from spotwatch.simulator.scenario import ScenarioError, parse_scenario, play

SCHEDULED = "/latest/meta-data/events/maintenance/scheduled"
SPOT = "/latest/meta-data/spot/instance-action"


def test_a_timeline_plays_notices_events_moves_cancels_withdrawals_and_faults() -> None:
    steps = parse_scenario(
        json.dumps(
            {
                "steps": [
                    {"at": 0, "event": "instance-reboot", "id": "ev-1", "lead": 600},
                    {"at": 0, "notice": "stop", "lead": 120},
                    {"at": 0.2, "cancel": "ev-1"},
                    {"at": 0.2, "fault": "status", "status": 500, "path": "meta-data/spot"},
                    {"at": 0.4, "withdraw": "spot"},
                ]
            }
        )
    )
    with ImdsSimulator() as sim:
        player = threading.Thread(target=play, args=(sim, steps, threading.Event()))
        player.start()
        time.sleep(0.1)
        (event,) = json.loads(sim._lookup(SCHEDULED)[1])
        assert (event["EventId"], event["State"], event["Code"]) == (
            "ev-1",
            "active",
            "instance-reboot",
        )
        assert json.loads(sim._lookup(SPOT)[1])["action"] == "stop"
        player.join(5)
        assert json.loads(sim._lookup(SCHEDULED)[1])[0]["State"] == "canceled"
        assert sim._lookup(SPOT)[0] == 404
        assert sim._take_faults(SPOT).status == 500  # the fault waits for its request


@pytest.mark.parametrize(
    "text, named",
    [
        ("[]", "steps"),
        ('{"steps": [{"at": 1}]}', "steps[0]"),
        ('{"steps": [{"at": 1, "notice": "explode"}]}', "steps[0].notice"),
        ('{"steps": [{"notice": "stop"}]}', "steps[0].at"),
        ('{"steps": [{"at": 0, "event": "system-reboot", "when": 3}]}', "when"),
        ('{"steps": [{"at": 0, "fault": "hang"}]}', "steps[0].seconds"),
    ],
)
def test_a_bad_scenario_names_the_step_and_key(text: str, named: str) -> None:
    with pytest.raises(ScenarioError, match=named.replace("[", r"\[").replace("]", r"\]")):
        parse_scenario(text)


def test_the_command_refuses_a_bad_scenario_with_exit_78(tmp_path: Path) -> None:
    bad = tmp_path / "scenario.json"
    bad.write_text('{"steps": [{"at": 0, "notice": "explode"}]}')
    done = subprocess.run(
        [sys.executable, "-m", "spotwatch", "simulate-imds", "--scenario", str(bad)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 78
    assert "steps[0].notice" in done.stderr and "Traceback" not in done.stderr
