"""`spotwatch rehearse`: the real daemon against the embedded simulator, with real hooks."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from operator_support import clean_env, spotwatch

from spotwatch.commands.timeline import StepRecord, Timeline, verdict
from spotwatch.config.schema import DEFAULT_CONFD_DIR, DEFAULT_CONFIG_PATH


def _lines(path: Path) -> list:
    return path.read_text().splitlines() if path.exists() else []


@pytest.mark.parametrize(
    ("action", "lead"), [("terminate", "4"), ("stop", "4"), ("hibernate", None), ("rebalance", "4")]
)
def test_rehearse_runs_every_step_of_the_configured_response(
    action, lead, tmp_path, write_config, hook_script, receiver
):
    out = tmp_path / "hooks.out"
    sink = receiver()
    config = write_config(
        [
            {"name": "first", "command": [hook_script("first", out)], "actions": [action]},
            {
                "name": "second",
                "command": [hook_script("second", out)],
                "actions": [action],
                "order": 1,
            },
        ],
        webhook={"url": sink.url(), "retries": 1},
    )
    args = ["rehearse", "-c", str(config), "--action", action]
    if lead is not None:
        args += ["--lead", lead]
    result = spotwatch(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    text = result.stdout
    assert "notice raised" in text and "detected after" in text
    for name in ("first", "second"):
        assert f"start   hook:{name}" in text
        assert f"end     hook:{name}: ok" in text
        assert f"[{name}] {name} says hello" in text  # hook output is in the timeline
    assert "MISSED" not in text
    assert "rehearsal ok" in text
    # Hooks ran for real, in order, told it is a rehearsal (and dry-run: no --live-ecs).
    assert _lines(out) == [f"first {action} rehearsal 1", f"second {action} rehearsal 1"]
    # The webhook got the events, marked as a rehearsal.
    kinds = [(e["event"], e["step"]) for e in sink.events]
    # Hibernate ends with the trigger step (a dry run in a rehearsal).
    trigger = [("step", "hibernate:trigger")] if action == "hibernate" else []
    assert kinds == [
        ("notice", None),
        ("step", "hook:first"),
        ("step", "hook:second"),
        *trigger,
        ("complete", None),
    ]
    assert {e["source"] for e in sink.events} == {"rehearsal"}


def test_a_hook_too_slow_for_the_lead_is_marked_missed(tmp_path, write_config, hook_script):
    out = tmp_path / "hooks.out"
    config = write_config(
        [
            {"name": "quick", "command": [hook_script("quick", out)]},
            {
                "name": "slow",
                "command": [hook_script("slow", out, sleep=10)],
                "timeout": "60s",
                "order": 1,
            },
        ],
        deadline_margin="1s",
    )
    result = spotwatch("rehearse", "-c", str(config), "--lead", "3")
    assert result.returncode == 1, result.stdout + result.stderr
    slow = [line for line in result.stdout.splitlines() if "hook:slow" in line and "MISSED" in line]
    assert slow, result.stdout  # in the timeline and in the summary
    assert "end     hook:quick: ok" in result.stdout
    assert "rehearsal FAILED" in result.stdout


def test_a_failing_hook_fails_the_rehearsal(tmp_path, write_config, hook_script):
    out = tmp_path / "hooks.out"
    config = write_config([{"name": "bad", "command": [hook_script("bad", out, exit_code=3)]}])
    result = spotwatch("rehearse", "-c", str(config), "--lead", "5")
    assert result.returncode == 1
    assert "FAILED" in result.stdout and "exit 3" in result.stdout


def _has_system_config() -> bool:
    if os.path.exists(DEFAULT_CONFIG_PATH):
        return True
    try:
        return any(n.endswith(".yaml") for n in os.listdir(DEFAULT_CONFD_DIR))
    except OSError:
        return False


@pytest.mark.skipif(
    _has_system_config(), reason=f"{DEFAULT_CONFIG_PATH} exists here: cannot test 'no config'"
)
def test_rehearse_without_any_config_uses_the_demo(tmp_path):
    env = clean_env(HOME=str(tmp_path))
    result = spotwatch("rehearse", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "built-in demo config" in result.stdout
    assert "[demo] SPOTWATCH_SOURCE=rehearsal" in result.stdout
    assert "[demo] SPOTWATCH_ACTION=terminate" in result.stdout
    assert "rehearsal ok" in result.stdout


def test_rehearse_config_errors_exit_78(tmp_path):
    missing = spotwatch("rehearse", "-c", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 78
    bad = tmp_path / "bad.yaml"
    bad.write_text("hooks:\n  - name: x\n    command: true\n    timeout: soon\n")
    bad.chmod(0o600)
    result = spotwatch("rehearse", "-c", str(bad))
    assert result.returncode == 78
    assert "hooks[0].timeout" in result.stderr


def test_rebalance_disabled_is_said_plainly(write_config):
    config = write_config(rebalance={"enabled": False})
    result = spotwatch("rehearse", "-c", str(config), "--action", "rebalance")
    assert result.returncode == 1
    assert "rebalance.enabled is false" in result.stdout


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_line_on_a_terminal_is_one_updating_line():
    out = _Tty()
    timeline = Timeline(out, live=True)
    timeline.t0_wall = 1000.0
    timeline.deadline = 10**10
    timeline.steps["hook:x"] = StepRecord("hook:x", "hook", started=1000.5)
    timeline.progress()
    timeline.progress()
    timeline.line("end     hook:x")
    text = out.getvalue()
    assert text.startswith("\r") and "running: hook:x" in text
    assert text.count("\n") == 1  # progress never adds lines; the event line clears it
    record = StepRecord("hook:y", "hook", started=1000.0, ended=10**10 + 2.0, status="ok")
    assert "MISSED" in verdict(timeline, record)


def test_a_rebalance_is_judged_against_the_daemons_own_deadline(
    write_config, hook_script, tmp_path
):
    """A rebalance recommendation names no moment to be done by: the daemon gives its hooks
    their timeouts (7 s + the 5 s kill grace here), and the rehearsal shows that deadline,
    not the recommendation's time minus the margin (t+3 with --lead 4, as it used to)."""
    out = tmp_path / "hooks.out"
    hook = {"name": "h", "command": [hook_script("h", out)], "actions": ["rebalance"]}
    config = write_config([{**hook, "timeout": "7s"}])
    result = spotwatch("rehearse", "-c", str(config), "--action", "rebalance", "--lead", "4")
    assert result.returncode == 0, result.stdout + result.stderr
    detected = next(line for line in result.stdout.splitlines() if "detected after" in line)
    shown = float(detected.split("deadline t+")[1].split(",")[0])
    assert 11.0 <= shown <= 13.5, detected


@pytest.mark.parametrize(
    ("action", "told", "source_line"),
    [
        ("asg-terminate", "terminate", "SPOTWATCH_ACTION=terminate"),
        ("reboot", "reboot", "SPOTWATCH_EVENT_CODE=instance-reboot"),
        ("maintenance", "maintenance", "SPOTWATCH_EVENT_CODE=system-maintenance"),
        ("start", "start", "SPOTWATCH_ACTION=start"),
    ],
)
def test_rehearse_every_way_the_instance_goes(action, told, source_line, tmp_path):
    """The signals beyond the Spot notice rehearse end to end with the demo config: a group's
    termination, a scheduled reboot or maintenance (NotBefore --lead s away), the first boot
    after a stop; the hooks are told the action, and that it is a rehearsal."""
    env = clean_env(HOME=str(tmp_path))
    result = spotwatch("rehearse", "--action", action, "--lead", "20", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SPOTWATCH_ACTION={told}" in result.stdout
    assert source_line in result.stdout
    assert "SPOTWATCH_SOURCE=rehearsal" in result.stdout
    assert "rehearsal ok" in result.stdout
