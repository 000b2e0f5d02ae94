"""Resume from hibernation as the daemon sees it: CLOCK_BOOTTIME jumps ahead of
CLOCK_MONOTONIC between two polls. The daemon runs in this process with its clock pair
injected, so the jump is ours to make; IMDS is the simulator over HTTP, hooks and the sleep
hook are real processes. Polls are made one by one, so every interleaving is exact."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Tuple

import pytest
from hibsupport import (
    in_seconds,
    lines,
    marker_command,
    probes,
    read_json,
    record_hook,
    run_sleep_hook,
)

from spotwatch.commands.settings import load_service_config
from spotwatch.daemon.shell import Daemon
from spotwatch.daemon.wiring import daemon_parts


class Clocks:
    """(CLOCK_BOOTTIME, CLOCK_MONOTONIC) with a sleep we can add."""

    def __init__(self) -> None:
        self.asleep = 0.0

    def __call__(self) -> Tuple[float, float]:
        now = time.monotonic()
        return now + self.asleep, now


@pytest.fixture
def in_process(hib):
    made = []

    def make(config: Path) -> Tuple[Daemon, Clocks]:
        loaded = load_service_config(str(config), env={}, with_user_data=False)
        clocks = Clocks()
        parts = daemon_parts(loaded, probes=probes(hib.root))
        daemon = Daemon(loaded, parts=parts, clock_pair=clocks)
        daemon.prepare()
        made.append(daemon)
        return daemon, clocks

    yield make
    for daemon in made:
        daemon.shutdown()


def poll(daemon: Daemon) -> None:
    assert daemon.watcher is not None
    daemon.watcher.poll_once()
    assert daemon.responder.wait(15)


def test_resume_renews_the_token_rearms_and_runs_resume_hooks_once(hib, in_process):
    out = hib.dir / "out"
    config = hib.config(
        [record_hook("save", out), record_hook("back", out, actions=["resume"])],
        hibernate={"trigger": "command", "command": marker_command(out)},
    )
    daemon, clocks = in_process(config)
    hib.imds.set_instance_action("hibernate")
    poll(daemon)
    assert lines(out) == ["save hibernate instance-action", "trigger hibernate"]
    for _ in range(3):
        poll(daemon)
    assert len(lines(out)) == 2

    tokens = hib.imds.token_puts
    clocks.asleep += 3600.0  # an hour in hibernation
    poll(daemon)  # the first poll after waking up notices it
    assert lines(out)[2:] == ["back resume resume-detected"]
    assert daemon.watcher is not None
    assert all(tracker.known is None for tracker in daemon.watcher.trackers.values())
    assert read_json(hib.state / "state.json")["trackers"]["spot"]["known"] is None

    # A later hibernate notice (same action): handled again, not taken for a moved time.
    hib.imds.set_instance_action("hibernate", in_seconds(2))
    poll(daemon)
    assert hib.imds.token_puts == tokens + 1
    assert lines(out)[3:] == ["save hibernate instance-action", "trigger hibernate"]
    for _ in range(3):
        poll(daemon)
    assert lines(out).count("back resume resume-detected") == 1
    assert len(lines(out)) == 5


def test_sleep_hook_post_and_the_daemon_run_resume_hooks_once_per_resume(hib, in_process):
    """Either may see the resume first; the resume hooks run once per sleep cycle."""
    out = hib.dir / "out"
    config = hib.config(
        [record_hook("back", out, actions=["resume"])], hibernate={"trigger": "none"}
    )
    daemon, clocks = in_process(config)
    poll(daemon)

    # Cycle 1: systemd's post hook first, then the daemon's poll sees the clock jump.
    assert run_sleep_hook(config, "pre", hib.env).returncode == 0
    assert run_sleep_hook(config, "post", hib.env).returncode == 0
    assert lines(out) == ["back resume sleep-hook"]
    clocks.asleep += 60.0
    poll(daemon)
    poll(daemon)
    assert lines(out) == ["back resume sleep-hook"]
    assert read_json(hib.state / "state.json")["resume_generation"] == 1

    # Cycle 2: the daemon first, then the post hook.
    assert run_sleep_hook(config, "pre", hib.env).returncode == 0
    clocks.asleep += 60.0
    poll(daemon)
    assert lines(out) == ["back resume sleep-hook", "back resume resume-detected"]
    assert run_sleep_hook(config, "post", hib.env).returncode == 0
    poll(daemon)
    assert len(lines(out)) == 2
    assert read_json(hib.state / "hibernate.json")["resumes"] == 2
