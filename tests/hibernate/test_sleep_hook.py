"""`spotwatch sleep-hook pre|post ACTION` as systemd-sleep runs it: a real process, always
exit 0, coordinated with a real daemon through the state directory."""

from __future__ import annotations

import random
import subprocess
import time

import yaml
from hibsupport import (
    REPO,
    ended_step,
    lines,
    read_json,
    record_hook,
    run_sleep_hook,
    sleep_hook_command,
    wait_for,
)


def test_pre_and_post_without_a_daemon(hib):
    """No notice at all (the ACPI event outran the poll): pre runs the hibernate hooks once
    per sleep, post the resume hooks once; other actions and broken configs do nothing; all
    exit 0."""
    out = hib.dir / "out"
    config = hib.config([record_hook("save", out), record_hook("back", out, actions=["resume"])])
    for phase in ("pre", "pre", "post", "post"):
        assert run_sleep_hook(config, phase, hib.env).returncode == 0
    assert lines(out) == ["save hibernate sleep-hook", "back resume sleep-hook"]
    assert run_sleep_hook(config, "pre", hib.env, action="suspend").returncode == 0
    assert run_sleep_hook(config, "post", hib.env, action="suspend").returncode == 0
    assert len(lines(out)) == 2
    # The next cycle is a new one.
    assert run_sleep_hook(config, "pre", hib.env).returncode == 0
    assert len(lines(out)) == 3

    config.write_text("hooks: [")  # invalid YAML: logged, still 0
    assert run_sleep_hook(config, "pre", hib.env).returncode == 0


def test_pre_bounded_by_the_budget(hib):
    out = hib.dir / "out"
    config = hib.config([record_hook("slow", out, sleep=30)], hibernate={"budget": "1s"})
    started = time.monotonic()
    done = run_sleep_hook(config, "pre", hib.env)
    assert done.returncode == 0
    assert time.monotonic() - started < 5
    assert lines(out) == ["slow hibernate sleep-hook"]


def test_pre_and_post_after_the_daemon_handled_the_notice(hib):
    """The daemon ran the hooks: pre does not run them again; post runs the resume hooks and
    the daemon re-arms (a fresh token; the same notice again is new)."""
    out = hib.dir / "out"
    config = hib.config(
        [record_hook("save", out), record_hook("back", out, actions=["resume"])],
        hibernate={"trigger": "none"},
    )
    daemon = hib.daemon()
    hib.imds.set_instance_action("hibernate")
    ended_step(hib.state, "hibernate:trigger")
    assert lines(out) == ["save hibernate instance-action"]
    assert run_sleep_hook(config, "pre", hib.env).returncode == 0
    assert lines(out) == ["save hibernate instance-action"]

    tokens = hib.imds.token_puts
    assert run_sleep_hook(config, "post", hib.env).returncode == 0
    assert "back resume sleep-hook" in lines(out)[1:]
    wait_for(lambda: "closed (resumed from hibernation)" in daemon.log())
    wait_for(lambda: hib.imds.token_puts > tokens)
    # The notice still shows: after a resume it is a new one. The daemon may see the resume
    # and run it before the sleep hook's resume hook has written its line.
    wait_for(lambda: len(lines(out)) == 3)
    assert sorted(lines(out)[1:]) == ["back resume sleep-hook", "save hibernate instance-action"]


def _seen_gone(tracker: dict) -> bool:
    """A poll has seen the notice absent (or three have, and it is forgotten)."""
    return tracker["known"] is None or tracker["absent_polls"] > 0


def test_daemon_and_sleep_hook_racing_never_both_run_the_hooks(hib):
    """Ten sleep cycles; in each the notice and `sleep-hook pre` arrive together (jittered
    either way). The hibernate hooks run exactly once per cycle, by one or the other."""
    out = hib.dir / "out"
    config = hib.config([record_hook("save", out)], hibernate={"trigger": "none"})
    daemon = hib.daemon()
    wait_for(lambda: hib.imds.count(path="/latest/meta-data/spot/instance-action") > 1)
    rng = random.Random(7)
    rounds = 10
    for cycle in range(1, rounds + 1):
        hook = subprocess.Popen(
            sleep_hook_command(config, "pre"),
            env=hib.env,
            cwd=str(REPO),
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(0.0, 0.5))  # the hook's start-up is ~0.3 s: either may win
        hib.imds.raise_notice("hibernate", cycle)  # a new time every cycle
        assert hook.wait(30) == 0
        wait_for(lambda c=cycle: len(lines(out)) >= c)
        wait_for(lambda c=cycle: read_json(hib.state / "hibernate.json")["hooks"]["done"])
        time.sleep(0.1)  # time for a (wrong) second run to show (later cycles would see it too)
        assert len(lines(out)) == cycle, lines(out)
        # The notice goes before the resume: one still showing after a resume is a new
        # notice (CONTRACT §3), and the daemon would rightly handle it again.
        hib.imds.clear_instance_action()
        wait_for(lambda: _seen_gone(read_json(hib.state / "state.json")["trackers"]["spot"]))
        assert run_sleep_hook(config, "post", hib.env).returncode == 0
        wait_for(lambda c=cycle: read_json(hib.state / "state.json")["resume_generation"] == c)
    sources = [line.split()[-1] for line in lines(out)]
    assert len(sources) == rounds
    assert "Traceback" not in daemon.log()
    print("winners:", {s: sources.count(s) for s in set(sources)})


def _env_hook(name: str, out, actions, timeout: str = "30s"):
    script = f'echo "$SPOTWATCH_SECONDS_LEFT $SPOTWATCH_DEADLINE $SPOTWATCH_INSTANCE_ID" >> {out}'
    return {"name": name, "command": script, "actions": actions, "timeout": timeout}


def test_pre_hooks_are_told_the_budget_and_resume_hooks_their_timeout(hib):
    """`pre hibernate` hooks get what is left of hibernate.budget as SECONDS_LEFT and start +
    that as DEADLINE (before: 0 and the notice time); `resume` hooks get their own timeout
    (before: a budget-based figure); both learn the instance id from IMDS when the daemon has
    recorded none (before: "unknown")."""
    pre, post = hib.dir / "pre", hib.dir / "post"
    config = hib.config(
        [_env_hook("save", pre, ["hibernate"]), _env_hook("back", post, ["resume"], "7s")],
        hibernate={"budget": "10s", "trigger": "none"},
    )
    began = time.time()
    assert run_sleep_hook(config, "pre", hib.env).returncode == 0
    left, deadline, instance = lines(pre)[0].split()
    assert 8 <= int(left) <= 10
    assert began + 8 <= int(deadline) <= time.time() + 10
    assert instance == hib.imds.instance_id
    assert run_sleep_hook(config, "post", hib.env).returncode == 0
    left, _deadline, instance = lines(post)[0].split()
    assert int(left) in (6, 7) and instance == hib.imds.instance_id


def test_pre_is_bounded_by_the_budget_even_when_imds_hangs(hib):
    """IMDS hangs on user data: the sleep hook still returns within the budget and the kill
    grace (before: user data was fetched first, unbounded by the budget)."""
    out = hib.dir / "out"
    config = hib.config([record_hook("save", out)], hibernate={"budget": "1s"})
    hib.imds.inject_hang(20, path="/latest/user-data", count=None)
    started = time.monotonic()
    assert run_sleep_hook(config, "pre", hib.env).returncode == 0
    assert time.monotonic() - started < 1 + 5 + 3


def test_pre_is_bounded_by_user_datas_budget(hib):
    """User data raises `hibernate.budget` from the file's 1 s to 12 s: a hibernate hook
    that takes 8 s runs to its end before `pre` returns. Before, the sleep hook's own limit
    came from the file config alone (1 s + the kill grace + slack: 7 s), so it exited while
    the hook still ran (systemd then hibernated under it)."""
    out = hib.dir / "out"
    hook = {
        "name": "slow",
        "command": f'echo start >> {out}; sleep 8; echo end >> {out}',
        "actions": ["hibernate"],
    }
    config = hib.config([hook], hibernate={"budget": "1s"})
    user_data = {"spotwatch": {"hibernate": {"budget": "12s"}}}
    hib.imds.set_user_data(("#cloud-config\n" + yaml.safe_dump(user_data)).encode())
    started = time.monotonic()
    assert run_sleep_hook(config, "pre", hib.env).returncode == 0
    took = time.monotonic() - started
    assert lines(out) == ["start", "end"], took
    assert took < 12 + 5 + 1  # and still bounded by the budget in force
