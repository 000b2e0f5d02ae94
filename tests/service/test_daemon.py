"""The daemon end to end: a real `spotwatch run` process against the IMDS simulator over
real HTTP, with hooks as real processes. These are the core promises of CONTRACT.md §3:
a notice is handled once, across moved times and restarts, and handled again only after it
was gone for 3 polls; IMDS trouble never stops the daemon.
"""

from __future__ import annotations

import os
import signal
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from service_support import counter_hook, lines, state, wait_for
from testkit import response_record

from spotwatch.simulator.imds import ImdsSimulator, format_time


def _in(seconds: float) -> str:
    return format_time(datetime.now(timezone.utc) + timedelta(seconds=seconds))


def test_a_notice_is_handled_once_until_gone_for_three_polls(imds, workdir, write_config, daemons):
    """Runs the response once; not again while present, when its time moves, or after a
    restart; again after it was absent for 3 polls and reappeared."""
    out = workdir / "hooks.out"
    config = write_config([counter_hook("checkpoint", out)])
    daemon = daemons(config)
    imds.set_instance_action("terminate", _in(60))
    wait_for(lambda: len(lines(out)) == 1)
    assert lines(out) == ["checkpoint terminate instance-action"]

    time.sleep(1.0)  # five more polls with the notice present
    imds.set_instance_action("terminate", _in(90))  # the time moves
    wait_for(lambda: "time moved" in daemon.log())
    assert len(lines(out)) == 1
    wait_for(lambda: response_record(state(workdir))["notice"]["time"] == imds_time(imds))

    assert daemon.stop() == 0
    daemon = daemons(config)  # a restart with the notice still there
    wait_for(lambda: imds.count(path="/latest/meta-data/spot/instance-action") > 30)
    time.sleep(0.6)
    assert len(lines(out)) == 1

    imds.clear_instance_action()
    wait_for(lambda: "is gone" in daemon.log())
    imds.set_instance_action("terminate", _in(60))
    wait_for(lambda: len(lines(out)) == 2)
    time.sleep(0.6)
    assert len(lines(out)) == 2
    assert daemon.stop() == 0


def imds_time(imds: ImdsSimulator) -> str:
    import json
    import urllib.request

    token_request = urllib.request.Request(
        imds.endpoint + "/latest/api/token",
        method="PUT",
        headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"},
    )
    token = urllib.request.urlopen(token_request, timeout=2).read().decode()
    request = urllib.request.Request(
        imds.endpoint + "/latest/meta-data/spot/instance-action",
        headers={"X-aws-ec2-metadata-token": token},
    )
    value = json.loads(urllib.request.urlopen(request, timeout=2).read())["time"]
    assert isinstance(value, str)
    return value


def test_a_short_absence_does_not_make_a_new_notice(imds, workdir, write_config, daemons):
    """Gone for fewer than 3 polls and back: still the same notice, not handled again."""
    out = workdir / "hooks.out"
    daemon = daemons(write_config([counter_hook("checkpoint", out)]))
    time_text = _in(60)
    imds.set_instance_action("terminate", time_text)
    wait_for(lambda: len(lines(out)) == 1)
    imds.clear_instance_action()
    time.sleep(0.25)  # about one poll
    imds.set_instance_action("terminate", time_text)
    time.sleep(1.0)
    assert len(lines(out)) == 1
    assert "is gone" not in daemon.log()


def test_an_action_change_is_a_new_notice(imds, workdir, write_config, daemons):
    """stop then terminate: each action gets its response."""
    out = workdir / "hooks.out"
    daemons(write_config([counter_hook("checkpoint", out, actions=["terminate", "stop"])]))
    imds.set_instance_action("stop", _in(60))
    wait_for(lambda: len(lines(out)) == 1)
    imds.set_instance_action("terminate", _in(60))
    wait_for(lambda: len(lines(out)) == 2)
    assert lines(out) == ["checkpoint stop instance-action", "checkpoint terminate instance-action"]


def test_restart_mid_response_reruns_no_finished_step(imds, workdir, write_config, daemons):
    """kill -9 while the second hook runs: after restart the first is not re-run, the second
    (interrupted) is, and the state file says so."""
    first, second = workdir / "first.out", workdir / "second.out"
    config = write_config(
        [counter_hook("first", first, order=0), counter_hook("second", second, order=1, sleep=1.5)]
    )
    daemon = daemons(config)
    imds.set_instance_action("terminate", _in(60))
    wait_for(lambda: len(lines(second)) == 1)
    daemon.stop(signal.SIGKILL)
    steps = {s["name"]: s["status"] for s in response_record(state(workdir))["steps"]}
    # "running" is written off the hook's path: a kill may come before it lands.
    assert steps["hook:first"] == "ok" and steps["hook:second"] in ("running", "pending")

    daemons(config)
    wait_for(lambda: len(lines(second)) == 2)
    wait_for(lambda: response_record(state(workdir))["done"], timeout=10)
    assert len(lines(first)) == 1
    steps = {s["name"]: s["status"] for s in response_record(state(workdir))["steps"]}
    assert steps == {"hook:first": "ok", "hook:second": "ok"}


def test_polling_keeps_its_cadence_while_hooks_run(imds, workdir, write_config, daemons):
    """A 3 s hook does not hold up polling: ~15 polls at 0.2 s happen meanwhile."""
    out = workdir / "hooks.out"
    daemons(write_config([counter_hook("slow", out, sleep=3)]))
    imds.set_instance_action("terminate", _in(60))
    wait_for(lambda: len(lines(out)) == 1)
    before = imds.count(path="/latest/meta-data/spot/instance-action")
    time.sleep(2.0)
    during = imds.count(path="/latest/meta-data/spot/instance-action") - before
    assert 7 <= during <= 13, during


def test_imds_refusing_at_start_then_answering(workdir, write_config, daemons, imds):
    """Connection refused at start: no crash; once IMDS answers, the notice is handled."""
    out = workdir / "hooks.out"
    port = imds.port
    imds.stop()  # the port is now closed: connection refused
    config = write_config([counter_hook("checkpoint", out)])
    daemon = daemons(config)
    wait_for(lambda: "IMDS poll failed" in daemon.log())
    time.sleep(0.5)
    assert daemon.process.poll() is None
    with ImdsSimulator(port=port) as again:
        again.set_instance_action("terminate", _in(60))
        wait_for(lambda: len(lines(out)) == 1)
        wait_for(lambda: "IMDS answers again" in daemon.log())
    assert daemon.log().count("IMDS poll failed") <= 3  # repeats are counted, not repeated


def test_an_instance_id_imds_did_not_answer_at_start_is_asked_before_the_response(
    workdir, write_config, daemons, imds
):
    """IMDS refuses connections while the daemon starts (it cannot learn the instance id),
    then answers with a notice already standing: the response is told the instance's id,
    not `unknown`. Before, the id was asked again only after a poll had been handled, so the
    response to the notice that poll saw ran with `unknown` (hooks, instance action, load
    balancers, lifecycle)."""
    out = workdir / "hooks.out"
    port = imds.port
    imds.stop()
    hook = {"name": "who", "command": f'echo "$SPOTWATCH_INSTANCE_ID" >> {out}'}
    daemon = daemons(write_config([hook], load_balancer={"enabled": False}))
    wait_for(lambda: "IMDS poll failed" in daemon.log())
    with ImdsSimulator(port=port) as again:
        again.set_instance_action("terminate", _in(60))
        wait_for(lambda: len(lines(out)) == 1)
        assert lines(out) == [again.instance_id]
        assert state(workdir)["instance_id"] == again.instance_id


def test_imds_faults_do_not_stop_detection(imds, workdir, write_config, daemons):
    """503 bursts, 429s and hangs longer than imds.timeout: the daemon goes on and still
    sees the notice."""
    out = workdir / "hooks.out"
    daemon = daemons(write_config([counter_hook("checkpoint", out)]))
    wait_for(lambda: imds.count(path="/latest/meta-data/spot/instance-action") > 2)
    imds.inject_status(503, count=10)
    imds.inject_status(429, count=5)
    imds.inject_hang(0.6, path="/latest/meta-data/spot/instance-action", count=3)
    imds.set_instance_action("terminate", _in(60))
    wait_for(lambda: len(lines(out)) == 1, timeout=15)
    assert daemon.process.poll() is None
    assert "Traceback" not in daemon.log()


def test_corrupt_state_file_is_set_aside(imds, workdir, write_config, daemons):
    """A garbled state file is moved aside with a warning; the daemon runs on."""
    (workdir / "state" / "state.json").write_bytes(b"{not json\x00")
    out = workdir / "hooks.out"
    daemon = daemons(write_config([counter_hook("checkpoint", out)]))
    wait_for(
        lambda: any(p.name.startswith("state.json.corrupt-") for p in (workdir / "state").iterdir())
    )
    imds.set_instance_action("terminate", _in(60))
    wait_for(lambda: len(lines(out)) == 1)
    assert "state file" in daemon.log() and "ignored" in daemon.log()


def test_sighup_applies_a_good_config_and_keeps_the_old_on_a_bad_one(
    imds, workdir, write_config, daemons
):
    """Reload: a valid new config takes effect; an invalid one is refused and said why."""
    old_out, new_out = workdir / "old.out", workdir / "new.out"
    config = write_config([counter_hook("old", old_out)])
    daemon = daemons(config)
    wait_for(lambda: imds.count(path="/latest/meta-data/spot/instance-action") > 1)

    config.write_text(config.read_text() + "bogus_key: 1\n")
    daemon.send(signal.SIGHUP)
    wait_for(lambda: "reload refused" in daemon.log())
    assert "bogus_key" in daemon.log()

    write_config([counter_hook("new", new_out)])
    daemon.send(signal.SIGHUP)
    wait_for(lambda: "config reloaded" in daemon.log())
    imds.set_instance_action("terminate", _in(60))
    wait_for(lambda: len(lines(new_out)) == 1)
    assert not old_out.exists()
    assert daemon.stop() == 0


def test_dry_run_tells_hooks(imds, workdir, write_config, daemons):
    """--dry-run: hooks still run, with SPOTWATCH_DRY_RUN=1."""
    out = workdir / "hooks.out"
    hook = {"name": "env", "command": f'echo "$SPOTWATCH_DRY_RUN" >> {out}'}
    daemons(write_config([hook]), "--dry-run")
    imds.set_instance_action("terminate", _in(60))
    wait_for(lambda: lines(out) == ["1"])


def test_rebalance_runs_only_rebalance_hooks(imds, workdir, write_config, daemons):
    """A rebalance recommendation runs hooks subscribed to rebalance, and no others."""
    out = workdir / "hooks.out"
    daemons(
        write_config(
            [
                counter_hook("early", out, actions=["rebalance"]),
                counter_hook("checkpoint", out),
            ]
        )
    )
    imds.set_rebalance(_in(0))
    wait_for(lambda: len(lines(out)) == 1)
    time.sleep(0.5)
    assert lines(out) == ["early rebalance rebalance-recommendation"]


def test_once_polls_once_and_runs_the_response(imds, workdir, write_config):
    """`run --once`: one poll, the response if a notice is there, then exit 0."""
    import subprocess
    import sys

    out = workdir / "hooks.out"
    config = write_config([counter_hook("checkpoint", out)])
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOTWATCH_")}
    command = [sys.executable, "-m", "spotwatch", "run", "--once", "-c", str(config)]
    assert subprocess.run(command, env=env, timeout=30).returncode == 0
    assert not out.exists()
    imds.set_instance_action("terminate", _in(60))
    assert subprocess.run(command, env=env, timeout=30).returncode == 0
    assert lines(out) == ["checkpoint terminate instance-action"]


def test_state_survives_in_the_state_dir(imds, workdir, write_config, daemons):
    """What `status` reads: the poll file and the state file, keyed to this boot."""
    daemon = daemons(write_config())
    wait_for(lambda: (workdir / "state" / "poll.json").exists())
    data = state(workdir)
    assert data["boot_id"] == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert data["instance_id"] == "i-0123456789abcdef0"
    assert daemon.stop() == 0


def test_a_rebalance_from_the_past_still_gives_hooks_their_timeout(
    imds, workdir, write_config, daemons
):
    """EC2's rebalance noticeTime is when it was said, already past: it is no deadline, so
    the rebalance hooks get their own timeout, not the short floor."""
    out = workdir / "hooks.out"
    hook = {
        "name": "early",
        "command": f'echo "$SPOTWATCH_SECONDS_LEFT" >> {out}',
        "actions": ["rebalance"],
        "timeout": "45s",
    }
    daemons(write_config([hook]))
    imds.set_rebalance(_in(-600))
    wait_for(lambda: len(lines(out)) == 1)
    assert 40 <= int(lines(out)[0]) <= 50
