"""The hibernate fast path end to end: a real `spotwatch run` against the IMDS simulator over
HTTP, hooks and the trigger command as real processes, the agent probes pointed at files in
the test's folder (by probed_spotwatch.py)."""

from __future__ import annotations

import time

from hibsupport import (
    ended_step,
    in_seconds,
    lines,
    marker_command,
    read_json,
    record_hook,
    run_sleep_hook,
    steps,
    wait_for,
)


def test_hooks_then_trigger_once_across_polls_and_restart(hib):
    """hibernate notice: hooks, then the trigger, once; not again while the notice stays for
    many polls, nor after a restart."""
    out = hib.dir / "out"
    hib.config(
        [record_hook("save", out)], hibernate={"trigger": "command", "command": marker_command(out)}
    )
    daemon = hib.daemon()
    hib.imds.set_instance_action("hibernate")
    wait_for(lambda: len(lines(out)) == 2)
    assert lines(out) == ["save hibernate instance-action", "trigger hibernate"]
    trigger = ended_step(hib.state, "hibernate:trigger")
    assert (trigger["kind"], trigger["status"]) == ("hibernate", "ok")
    # The trigger's claim also told a waiting sleep hook that the hooks are over.
    assert read_json(hib.state / "hibernate.json")["hooks"]["done"] is True

    polls = hib.imds.count(path="/latest/meta-data/spot/instance-action")
    wait_for(lambda: hib.imds.count(path="/latest/meta-data/spot/instance-action") > polls + 5)
    assert daemon.stop() == 0
    hib.daemon()  # the notice is still there after the restart
    wait_for(lambda: hib.imds.count(path="/latest/meta-data/spot/instance-action") > polls + 12)
    assert len(lines(out)) == 2
    # Even a response re-run from scratch would not trigger again: the ledger remembers.
    assert list(read_json(hib.state / "hibernate.json")["triggered"]) != []


def test_slow_hook_is_cut_at_the_budget_and_the_trigger_still_runs(hib):
    out, trig = hib.dir / "out", hib.dir / "trigger"
    hib.config(
        [record_hook("slow", out, sleep=30)],
        hibernate={"trigger": "command", "command": marker_command(trig), "budget": "1s"},
    )
    hib.daemon()
    hib.imds.set_instance_action("hibernate")
    wait_for(lambda: lines(out))
    started = time.monotonic()
    wait_for(lambda: lines(trig), timeout=8)
    assert time.monotonic() - started < 3.0
    wait_for(lambda: steps(hib.state)["hibernate:trigger"]["status"] == "ok")
    assert steps(hib.state)["hook:slow"]["status"] == "timeout"


def test_auto_stands_back_when_ec2s_agent_is_in_charge(hib):
    """configured=true and the hibinit agent installed: no trigger, said why."""
    trig = hib.dir / "trigger"
    hib.imds.set_hibernation_configured(True)
    hib.install_agent("usr/bin/hibinit-agent")
    hib.config([], hibernate={"trigger": "auto", "command": marker_command(trig)})
    hib.daemon()
    wait_for(lambda: read_json(hib.state / "hibernate.json").get("configured") is True)
    hib.imds.set_instance_action("hibernate")
    step = ended_step(hib.state, "hibernate:trigger")
    assert step["status"] == "skipped"
    assert "agent is in charge" in step["detail"] and "/usr/bin/hibinit-agent" in step["detail"]
    assert not trig.exists()
    # hibernation/configured was read at start, not on the hot path
    assert hib.imds.count(path="/latest/meta-data/hibernation/configured") == 1


def test_auto_triggers_when_the_agent_is_not_in_charge(hib):
    """An acpid sleep handler is installed but IMDS says hibernation is not configured: the
    agent will not act, so spotwatch runs the command."""
    trig = hib.dir / "trigger"
    hib.imds.set_hibernation_configured(False)
    hib.install_agent("etc/acpi/events/sleepconf", "event=button/sleep.*\naction=/x %e\n")
    hib.config([], hibernate={"trigger": "auto", "command": marker_command(trig)})
    hib.daemon()
    hib.imds.set_instance_action("hibernate")
    wait_for(lambda: lines(trig) == ["trigger hibernate"])


def test_no_trigger_when_a_sleep_is_under_way_dry_run_or_other_actions(hib):
    """The sleep hook fired first (its marker): hooks not re-run, no trigger. Dry run: 'would'.
    stop and terminate never trigger."""
    out, trig = hib.dir / "out", hib.dir / "trigger"
    config = hib.config(
        [record_hook("save", out, actions=["hibernate", "stop", "terminate"])],
        hibernate={"trigger": "command", "command": marker_command(trig)},
    )
    assert run_sleep_hook(config, "pre", hib.env).returncode == 0  # ACPI outran the poll
    assert lines(out) == ["save hibernate sleep-hook"]
    daemon = hib.daemon()
    hib.imds.set_instance_action("hibernate")
    step = ended_step(hib.state, "hibernate:trigger")
    assert step["status"] == "skipped" and "sleep is already under way" in step["detail"]
    assert steps(hib.state)["hook:save"]["status"] == "skipped"
    assert lines(out) == ["save hibernate sleep-hook"]
    daemon.stop()

    for action in ("stop", "terminate"):
        hib.imds.set_instance_action(action, in_seconds(60))
        hib.daemon()
        wait_for(lambda a=action: f"save {a} instance-action" in lines(out))
        hib.started[-1].stop()
    assert not trig.exists()

    hib.imds.clear_instance_action()
    (hib.state / "hibernate.json").unlink()
    (hib.state / "state.json").unlink()
    dry = hib.daemon("--dry-run")
    hib.imds.set_instance_action("hibernate")
    wait_for(lambda: "would run" in dry.log())
    time.sleep(0.3)
    assert not trig.exists()
