"""`spotwatch check --json` and `spotwatch status --json` carry the documented fields."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from email.utils import formatdate

from operator_support import spotwatch

from spotwatch.commands.check import ERROR, OK, WARNING, check_clock, check_hooks
from spotwatch.commands.check_asg import autoscaling_checks
from spotwatch.config.schema import AutoscalingSettings, Config, HookSpec, ImdsSettings
from spotwatch.simulator import http as simulator_http

CHECK_FIELDS = {"name", "status", "detail", "seconds"}


def test_check_json_against_the_simulator(write_config, hook_script, tmp_path):
    config = write_config([{"name": "cp", "command": [hook_script("cp", tmp_path / "x")]}])
    result = spotwatch("check", "-c", str(config), "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    doc = json.loads(result.stdout)
    assert doc["ok"] is True
    names = [c["name"] for c in doc["checks"]]
    assert {"config", "imds", "clock", "hook:cp", "state_dir"} <= set(names)
    for check in doc["checks"]:
        assert set(check) >= CHECK_FIELDS
        assert check["status"] in (OK, WARNING, ERROR)
    imds = next(c for c in doc["checks"] if c["name"] == "imds")
    assert "IMDSv2 token" in imds["detail"] and imds["seconds"] > 0
    clock = next(c for c in doc["checks"] if c["name"] == "clock")
    assert clock["status"] == OK and "IMDS" in clock["detail"]


def test_check_fails_when_imds_is_down_and_names_the_hook_problem(write_config, imds, tmp_path):
    config = write_config([{"name": "gone", "command": [str(tmp_path / "missing.sh")]}])
    imds.stop()
    result = spotwatch("check", "-c", str(config), "--json")
    assert result.returncode == 1
    doc = json.loads(result.stdout)
    assert doc["ok"] is False
    status = {c["name"]: c["status"] for c in doc["checks"]}
    assert status["imds"] == ERROR and status["hook:gone"] == ERROR
    table = spotwatch("check", "-c", str(config))
    assert table.returncode == 1 and "FAIL  imds" in table.stdout and "failed" in table.stdout


def test_check_tells_a_silent_imds_from_an_instance_in_no_group(imds):
    """`autoscaling.enabled: auto`: IMDS answering 404 for target-lifecycle-state means no
    Auto Scaling group (ok); IMDS refusing the connection says nothing about the group, and
    `check` says it cannot tell (a warning; an error with `enabled: true`). Before, a
    refused connection read as "in no Auto Scaling group"."""
    config = Config(imds=ImdsSettings(endpoint=imds.endpoint, timeout=0.3, user_data=False))
    [none] = autoscaling_checks(config)
    assert (none.status, none.detail) == (OK, "IMDS says this instance is in no Auto Scaling group")
    imds.stop()
    [silent] = autoscaling_checks(config)
    assert silent.status == WARNING
    assert silent.detail.startswith("cannot tell whether this instance is in an Auto Scaling")
    assert "connection refused" in silent.detail
    required = replace(config, autoscaling=AutoscalingSettings(enabled=True))
    assert [r.status for r in autoscaling_checks(required)] == [ERROR]


def test_check_bad_config_exits_78_with_json(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("poll_interval: soon\n")
    bad.chmod(0o600)
    result = spotwatch("check", "-c", str(bad), "--json")
    assert result.returncode == 78
    assert json.loads(result.stdout)["ok"] is False
    assert "poll_interval" in result.stderr


def test_a_hook_whose_user_does_not_exist_is_an_error_naming_the_hook():
    """`user:` naming nobody passes validation (users differ between build and run hosts),
    so check says it: the hook would fail at every notice. Before, check said OK."""
    hooks = (
        HookSpec(name="ghost", command=("/bin/true",), user="no-such-user-spotwatch"),
        HookSpec(name="root-by-name", command=("/bin/true",), user="root"),
        HookSpec(name="root-by-uid", command=("/bin/true",), user=0),
    )
    results = {r.name: r for r in check_hooks(Config(hooks=hooks))}
    assert results["hook:ghost"].status == ERROR
    assert results["hook:ghost"].detail.startswith("user: no such user: no-such-user-spotwatch")
    assert results["hook:root-by-name"].status == OK
    assert results["hook:root-by-uid"].status == OK


def test_clock_skew_is_reported(imds, monkeypatch):
    config = Config(imds=ImdsSettings(endpoint=imds.endpoint, timeout=1.0))
    monkeypatch.setattr(
        simulator_http.Handler,
        "date_time_string",
        lambda self, timestamp=None: formatdate(time.time() - 20, usegmt=True),
    )
    (result,) = check_clock(config)
    assert result.status == WARNING and "ahead of IMDS" in result.detail
    monkeypatch.setattr(
        simulator_http.Handler,
        "date_time_string",
        lambda self, timestamp=None: formatdate(time.time() + 600, usegmt=True),
    )
    (result,) = check_clock(config)
    assert result.status == ERROR and "behind IMDS" in result.detail


def test_status_without_state_exits_1(write_config):
    result = spotwatch("status", "-c", str(write_config()), "--json")
    assert result.returncode == 1
    assert "no state yet" in result.stderr


def test_status_json_after_a_real_daemon_run(write_config, hook_script, imds, tmp_path):
    out = tmp_path / "hooks.out"
    config = write_config(
        [
            {"name": "good", "command": [hook_script("good", out)]},
            {"name": "bad", "command": [hook_script("bad", out, exit_code=2)], "order": 1},
        ]
    )
    imds.raise_notice("terminate", 60)
    run = spotwatch("run", "--once", "-c", str(config))
    assert run.returncode == 0, run.stderr
    result = spotwatch("status", "-c", str(config), "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert {"time", "result"} <= set(doc["last_poll"])
    assert doc["last_poll"]["result"] == "notice"
    assert doc["last_poll"]["time"].endswith("Z")
    notice = doc["notice"]
    assert {"action", "time", "source", "first_seen", "deadline"} <= set(notice)
    assert notice["action"] == "terminate" and notice["source"] == "instance-action"
    steps = {s["name"]: s for s in doc["steps"]}
    for step in steps.values():
        assert set(step) >= {"name", "kind", "status", "started", "ended", "detail"}
    assert steps["hook:good"]["status"] == "ok" and steps["hook:good"]["kind"] == "hook"
    assert steps["hook:bad"]["status"] == "failed" and "exit 2" in steps["hook:bad"]["detail"]
    table = spotwatch("status", "-c", str(config))
    assert table.returncode == 0
    assert "terminate at" in table.stdout and "hook:bad" in table.stdout
