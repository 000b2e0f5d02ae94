"""The package on a real machine: a minimal Debian bookworm image with systemd 252 as PID 1
(systemd-nspawn -b), the .deb installed with apt the way an image build does it, checked the
way an operator would (boot_scenario.py gathers the facts, asserted here). Root only; skipped,
saying why, where the machine cannot boot a container. The base image is cached outside the
repository, so a run after the first takes a couple of minutes."""

from __future__ import annotations

import json
import time
from typing import Any, Dict

import pytest
from boot_scenario import main
from machine import why_not

pytestmark = pytest.mark.boot


@pytest.fixture(scope="module")
def facts(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Any]:
    reason = why_not()
    if reason:
        pytest.skip(reason)
    work = tmp_path_factory.mktemp("boot")
    began = time.monotonic()
    result = main(work)
    result["timings"]["whole_run"] = time.monotonic() - began
    (work / "facts.json").write_text(json.dumps(result, indent=1, default=str))
    print("boot test timings:", json.dumps(result["timings"]))
    if result.get("boot", {}).get("failed"):
        pytest.skip("systemd-nspawn could not boot the image here: " + result["console"][-500:])
    return result


def test_an_image_build_enables_the_service_without_starting_it(facts: Dict[str, Any]) -> None:
    install = facts["image_install"]
    assert install["rc"] == 0, install["output"]
    assert install["enabled"] == "enabled"
    assert install["state_files"] == []  # nothing ran


def test_the_image_has_the_monitoring_kit(facts: Dict[str, Any]) -> None:
    assert facts["image_install"]["monitoring_kit"] == [
        "usr/share/spotwatch/grafana/spotwatch.json",
        "usr/share/spotwatch/prometheus/spotwatch-rules.yml",
    ]


def test_after_boot_it_is_active_and_says_what_it_does(facts: Dict[str, Any]) -> None:
    show = facts["boot"]["show"]
    assert show["ActiveState"] == "active"
    assert show["StatusText"] == "polling every 1 s; no notice"


def test_reload_returns_with_the_new_config_in_force(facts: Dict[str, Any]) -> None:
    good = facts["reload_good"]
    assert good["rc"] == 0, good["stderr"]
    assert good["show"]["StatusText"] == "config reloaded; polling every 2 s"  # already


def test_a_refused_config_fails_the_reload_and_keeps_the_daemon(facts: Dict[str, Any]) -> None:
    bad = facts["reload_bad"]
    assert bad["rc"] != 0
    assert bad["show"]["ActiveState"] == "active" and bad["same_pid"]
    assert "poll_interval" in bad["show"]["StatusText"]  # systemctl status names the problem
    assert "poll_interval" in bad["log"]
    assert facts["reload_back"] == 0


def test_a_notice_runs_the_hook_once_with_its_environment(facts: Dict[str, Any]) -> None:
    env = dict(line.split("=", 1) for line in facts["notice"]["env"].splitlines())
    assert env["SPOTWATCH_ACTION"] == "terminate"
    assert env["SPOTWATCH_NOTICE_TIME"] == facts["notice"]["time"]
    assert env["SPOTWATCH_SOURCE"] == "instance-action"
    assert env["SPOTWATCH_DRY_RUN"] == "0"
    assert env["SPOTWATCH_INSTANCE_ID"].startswith("i-")
    assert 0 < int(env["SPOTWATCH_SECONDS_LEFT"]) <= 90


def test_status_tells_the_response_is_done(facts: Dict[str, Any]) -> None:
    assert facts["notice"]["status_after"].endswith("; response done")


def test_the_journal_carries_the_notice_fields(facts: Dict[str, Any]) -> None:
    entries = [json.loads(line) for line in facts["notice"]["journal"].splitlines()]
    assert len(entries) == 1
    assert entries[0]["SPOTWATCH_ACTION"] == "terminate"
    assert entries[0]["SPOTWATCH_NOTICE_TIME"] == facts["notice"]["time"]


def test_kill_9_restarts_it_without_running_the_hook_again(facts: Dict[str, Any]) -> None:
    kill = facts["kill"]
    assert kill["show"]["ActiveState"] == "active"
    assert kill["show"]["MainPID"] != kill["old_pid"]
    assert kill["hook_starts"] == 1


def test_a_frozen_daemon_is_restarted_by_the_watchdog(facts: Dict[str, Any]) -> None:
    watchdog = facts["watchdog"]
    assert "watchdog" in watchdog["results"]
    assert int(watchdog["show"]["NRestarts"]) == watchdog["restarts_before"] + 1
    assert watchdog["hook_starts"] == 1


def test_status_without_root_says_it_needs_root(facts: Dict[str, Any]) -> None:
    status = facts["status"]
    assert status["nobody_rc"] == 1 and "needs root" in status["nobody_err"]
    assert status["root_rc"] == 0 and '"action": "terminate"' in status["root_out"]


def test_stop_waits_for_the_running_hook(facts: Dict[str, Any]) -> None:
    stop = facts["stop"]
    assert stop["rc"] == 0
    assert stop["hook_log"].endswith("start stop\nend stop\n")
    assert stop["show"]["Result"] == "success"


def test_the_sleep_hook_runs_the_hibernate_hooks(facts: Dict[str, Any]) -> None:
    assert facts["sleep_hook"]["rc"] == 0
    assert "SPOTWATCH_SOURCE=sleep-hook" in facts["sleep_hook"]["env"]


def test_remove_keeps_only_config_and_state(facts: Dict[str, Any]) -> None:
    remove = facts["remove"]
    assert remove["rc"] == 0 and remove["active"] == "inactive"
    assert "/usr/share/spotwatch" not in remove["left"]
    assert {"/etc/spotwatch", "/var/lib/spotwatch"} <= set(remove["left"])  # conffile, state


def test_purge_leaves_nothing(facts: Dict[str, Any]) -> None:
    assert facts["purge"]["rc"] == 0
    assert facts["purge"]["left"] == []
    assert facts["final_purge_left"] == []


def test_reinstall_and_upgrade_keep_it_running(facts: Dict[str, Any]) -> None:
    assert facts["reinstall"] == {"rc": 0, "active": "active"}
    upgrade = facts["upgrade"]
    assert upgrade["rc"] == 0, upgrade["output"]
    assert upgrade["active"] == "active" and upgrade["restarted"]
    assert upgrade["version"].endswith(".1")
    assert upgrade["config_kept"]


def test_the_signal_preset_reaches_a_units_main_process_and_waits_for_its_exit(
    facts: Dict[str, Any],
) -> None:
    """systemd names trainer.service's main PID; USR1 reaches it; the hook ends once the
    trainer has saved (1 s) and exited."""
    presets = facts["presets"]
    assert presets["reload_rc"] == 0
    step = presets["steps"]["hook:trainer"]
    assert step["status"] == "ok", step
    assert step["kind"] == "hook"
    assert step["detail"].startswith(
        f"sent SIGUSR1 to PID {presets['trainer_pid']} (trainer.service); it exited after 1."
    )
    told = presets["log"].splitlines()
    assert told.index("trainer USR1") < told.index("trainer saved")
    assert presets["active"]["trainer.service"] == "inactive"


def test_systemd_stop_stops_every_unit_at_once(facts: Dict[str, Any]) -> None:
    """Both workers take 1 s to stop after SIGTERM; they get it together, and the hook ends
    with both inactive."""
    presets = facts["presets"]
    step = presets["steps"]["hook:workers"]
    assert step["status"] == "ok", step
    assert step["detail"].startswith("stopped worker-a.service inactive, worker-b.service inactive")
    at = {" ".join(line.split()[:2]): float(line.split()[2])
          for line in presets["log"].splitlines() if len(line.split()) == 3}  # fmt: skip
    assert abs(at["worker-a TERM"] - at["worker-b TERM"]) < 0.5
    assert presets["active"]["worker-a.service"] == "inactive"
    assert presets["active"]["worker-b.service"] == "inactive"


# --- the confined unit (CONTRACT §6, docs/systemd.md "Hardening") --------------------------


def test_the_unit_is_rated_at_most_6_by_systemd_analyze_security(facts: Dict[str, Any]) -> None:
    """Asked of the running unit in the booted machine, as an operator would."""
    security = facts["security"]
    assert security["score"] is not None, security["table"]
    assert security["score"] <= 6.0, security["table"]


def _hook(facts: Dict[str, Any], name: str) -> Dict[str, Any]:
    hook = facts["promises"]["hooks"][name]
    assert hook["status"] == "ok", hook
    return hook


@pytest.mark.parametrize("folder", ["/var", "/srv", "/home", "/opt", "/tmp"])
def test_hooks_write_where_the_rest_of_the_system_sees_it(
    facts: Dict[str, Any], folder: str
) -> None:
    """A hook writes under the folder; PID 1's mount namespace (the rest of the system, not
    the unit's own view) finds the file: no read-only tree, no private /tmp."""
    _hook(facts, f"promise-write{folder.replace('/', '-')}")
    assert facts["promises"]["files"][folder] == "terminate\n"


def test_hooks_reach_the_network(facts: Dict[str, Any]) -> None:
    _hook(facts, "promise-network")
    assert "/network" in facts["world"]["requests"]


def test_hooks_run_systemctl(facts: Dict[str, Any]) -> None:
    """`systemctl start` from a hook: PID 1 starts the unit (the daemon's hibernation
    trigger is the same client, asking the same manager)."""
    _hook(facts, "promise-systemctl")
    assert facts["promises"]["probe_unit"] == "active"


def test_hooks_run_docker_against_the_docker_socket(facts: Dict[str, Any]) -> None:
    """The docker client in a hook reaches a real dockerd through /run/docker.sock (the
    socket spotwatch's ECS stops go through too)."""
    if not facts["world"]["dockerd"]:
        pytest.skip("no dockerd or docker client here (scripts/test installs docker.io)")
    hook = _hook(facts, "promise-docker")
    assert hook["log"].strip(), hook  # the server's version


def test_hooks_run_kubectl(facts: Dict[str, Any]) -> None:
    if "kubectl" not in facts["world"]["tools"]:
        pytest.skip("no kubectl on this machine (scripts/test installs kubernetes-client)")
    hook = _hook(facts, "promise-kubectl")
    assert "/version" in facts["world"]["requests"]
    assert "v1.20.2" in hook["log"], hook  # the server's answer, read by kubectl


def test_the_system_bus_and_logind_stay_reachable(facts: Dict[str, Any]) -> None:
    """A delay inhibitor lock taken over the system bus from inside the unit, the way the
    daemon holds one against an unannounced shutdown."""
    _hook(facts, "promise-logind")


def test_a_hook_with_a_user_runs_as_that_user(facts: Dict[str, Any]) -> None:
    """Dropping to `user:` (setuid, setgroups) still works under the bounding set and
    NoNewPrivileges."""
    _hook(facts, "promise-user")
    assert facts["promises"]["user"] == "nobody\n"


def test_nothing_blocks_imds_or_the_network(facts: Dict[str, Any]) -> None:
    """No IP address list (IMDS is 169.254.169.254), no private network, /tmp or tree."""
    settings = facts["promises"]["settings"]
    assert settings["IPAddressDeny"] == "" and settings["IPAddressAllow"] == "", settings
    assert settings["PrivateNetwork"] == "no" and settings["PrivateTmp"] == "no", settings
    assert settings["ProtectSystem"] == "no" and settings["ProtectHome"] == "no", settings


def test_the_daemon_writes_the_metrics_textfile(facts: Dict[str, Any]) -> None:
    text = facts["textfile"]
    assert 'spotwatch_notices_total{action="terminate",source="instance-action"} 1' in text


def test_a_poweroff_nobody_announced_waits_for_the_shutdown_hook(facts: Dict[str, Any]) -> None:
    """`systemctl poweroff` with no notice: logind announces it, spotwatch runs the hook
    subscribed to `shutdown` to its end (8 s, past logind's own 5 s limit) and only then
    lets the shutdown go on. The lock shows in `systemd-inhibit --list` and `check`; the
    package's drop-in is what raised logind's limit (read on SIGHUP at install and removal)."""
    found = facts["shutdown"]
    assert found["install_rc"] == 0
    assert found["delay_removed"] == "t 5000000"  # logind's default, the package gone
    assert found["delay_installed"] == "t 65000000"  # the package's drop-in
    assert "spotwatch" in found["inhibitors"] and "shutdown" in found["inhibitors"]
    checks = {c["name"]: c["status"] for c in json.loads(found["check"])["checks"]}
    assert checks["shutdown:lock"] == "ok" and checks["shutdown:delay"] == "ok"
    assert found["gone"], "the machine did not power off"
    assert found["hook_log"] == "start shutdown\nend shutdown\n"
    assert "SPOTWATCH_SOURCE=shutdown" in found["env"]
    (record,) = [r for r in found["state"]["responses"].values() if r["tracker"] == "shutdown"]
    assert record["done"] and "why_ended" not in record  # it ended before spotwatch was stopped
    assert [step["status"] for step in record["steps"]] == ["ok"]
    assert facts["timings"]["poweroff_to_gone"] >= 8
