"""The `signal` preset with real processes named by a PID file: the signal arrives, `wait`
ends the hook when the process has exited (and not before), and root signals only what the
PID file's owner may name. (A unit's main PID, through a real systemd: tests/boot.)"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator, List

import pytest
from preset_support import Trainer, context, preset_hook, run_step
from testkit import wait_for


@pytest.fixture
def trainers(tmp_path: Path) -> Iterator[List[Trainer]]:
    started: List[Trainer] = []
    yield started
    for trainer in started:
        if trainer.process.poll() is None:
            trainer.process.kill()
        trainer.process.wait()


def start(trainers: List[Trainer], folder: Path, save: float = 0.0) -> Trainer:
    trainer = Trainer(folder, save)
    trainers.append(trainer)
    return trainer


def test_the_signal_arrives_and_wait_ends_when_the_process_has_exited(
    tmp_path: Path, trainers: List[Trainer]
) -> None:
    """USR1 reaches the process in the PID file; the hook ends once the process (which
    takes 0.6 s to save) has exited, not before and not much after."""
    trainer = start(trainers, tmp_path, save=0.6)
    hook = preset_hook("signal", {"pidfile": str(trainer.pidfile), "signal": "USR1", "wait": True})
    started = time.monotonic()
    outcome = run_step(hook, context(60))
    took = time.monotonic() - started
    assert outcome.status == "ok", outcome.detail
    assert trainer.signals() == ["SIGUSR1"]
    assert trainer.process.poll() == 0  # it had exited when the hook ended
    assert 0.55 <= took < 3.0, took
    assert f"sent SIGUSR1 to PID {trainer.process.pid}" in outcome.detail
    assert "it exited after" in outcome.detail


def test_without_wait_the_hook_ends_at_once(tmp_path: Path, trainers: List[Trainer]) -> None:
    """The default signal is TERM; without `wait` the hook does not wait for the exit."""
    trainer = start(trainers, tmp_path, save=2.0)
    outcome = run_step(preset_hook("signal", {"pidfile": str(trainer.pidfile)}), context(60))
    assert outcome.status == "ok", outcome.detail
    assert trainer.process.poll() is None  # still saving
    wait_for(lambda: trainer.signals() == ["SIGTERM"])


def test_a_process_that_does_not_exit_makes_the_hook_time_out_and_is_left_alone(
    tmp_path: Path, trainers: List[Trainer]
) -> None:
    """With `wait`, a process still there at the hook's limit (its timeout here) makes the
    step `timeout`; the preset does not kill it (it is the operator's process)."""
    trainer = start(trainers, tmp_path, save=30.0)
    hook = preset_hook(
        "signal", {"pidfile": str(trainer.pidfile), "signal": "USR1", "wait": True}, timeout=1
    )
    started = time.monotonic()
    outcome = run_step(hook, context(60))
    assert outcome.status == "timeout", outcome.detail
    assert 0.9 <= time.monotonic() - started < 2.5
    assert "had not exited after" in outcome.detail
    assert trainer.process.poll() is None


def test_the_deadline_bounds_the_wait(tmp_path: Path, trainers: List[Trainer]) -> None:
    """T is the hook's timeout capped by the time left: with the deadline 3 s away and a
    timeout of 60 s, the wait ends at the deadline."""
    trainer = start(trainers, tmp_path, save=30.0)
    hook = preset_hook("signal", {"pidfile": str(trainer.pidfile), "wait": True}, timeout=60)
    started = time.monotonic()
    outcome = run_step(hook, context(3))
    assert outcome.status == "timeout", outcome.detail
    assert 2.8 <= time.monotonic() - started < 5.0


def test_the_daemons_shutdown_interrupts_the_wait(tmp_path: Path, trainers: List[Trainer]) -> None:
    """When the shutdown grace is over (`abort`), the wait ends `interrupted`."""
    trainer = start(trainers, tmp_path, save=30.0)
    ctx = context(60)
    hook = preset_hook("signal", {"pidfile": str(trainer.pidfile), "wait": True})
    timer = threading.Timer(0.5, ctx.abort.set)
    timer.start()
    outcome = run_step(hook, ctx)
    timer.join()
    assert outcome.status == "interrupted", outcome.detail


def test_dry_run_says_what_it_would_signal_and_signals_nothing(
    tmp_path: Path, trainers: List[Trainer]
) -> None:
    trainer = start(trainers, tmp_path)
    hook = preset_hook("signal", {"pidfile": str(trainer.pidfile), "signal": "USR1", "wait": True})
    outcome = run_step(hook, context(60, dry_run=True))
    assert outcome.status == "ok"
    assert outcome.detail == (
        f"would send SIGUSR1 to the PID in {trainer.pidfile} "
        f"(now: PID {trainer.process.pid} ({trainer.pidfile})) and wait for it to exit"
    )
    time.sleep(0.2)
    assert trainer.signals() == [] and trainer.process.poll() is None


@pytest.mark.parametrize(
    ("content", "expected"),
    [("", "no PID in it"), ("1\n", "names PID 1: never signalled"), ("x12\n", "no PID in it")],
)
def test_a_pid_file_without_a_usable_pid_fails(tmp_path: Path, content: str, expected: str) -> None:
    pidfile = tmp_path / "bad.pid"
    pidfile.write_text(content)
    outcome = run_step(preset_hook("signal", {"pidfile": str(pidfile)}), context(60))
    assert outcome.status == "failed" and expected in outcome.detail, outcome.detail


def test_a_stale_pid_file_fails_saying_so(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    pidfile = tmp_path / "stale.pid"
    pidfile.write_text(f"{gone.pid}\n")
    outcome = run_step(preset_hook("signal", {"pidfile": str(pidfile)}), context(60))
    assert outcome.status == "failed"
    assert f"names PID {gone.pid}, which is not running" in outcome.detail


def test_a_missing_pid_file_fails_naming_it(tmp_path: Path) -> None:
    outcome = run_step(preset_hook("signal", {"pidfile": str(tmp_path / "no.pid")}), context(60))
    assert outcome.status == "failed" and "No such file" in outcome.detail


def test_a_symlinked_pid_file_is_not_followed(tmp_path: Path, trainers: List[Trainer]) -> None:
    """Root does not follow a link to some other PID file (whoever writes the folder could
    point it at any root-owned one)."""
    trainer = start(trainers, tmp_path)
    link = tmp_path / "link.pid"
    link.symlink_to(trainer.pidfile)
    outcome = run_step(preset_hook("signal", {"pidfile": str(link)}), context(60))
    assert outcome.status == "failed", outcome.detail
    assert trainer.process.poll() is None and trainer.signals() == []


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to own files and processes as others")
def test_a_pid_file_names_only_its_owners_processes(
    tmp_path: Path, trainers: List[Trainer]
) -> None:
    """A PID file owned by uid 65534 naming root's process is refused; naming a process of
    uid 65534 it is honoured (as systemd does with PIDFile=)."""
    os.chmod(tmp_path, 0o755)
    roots = start(trainers, tmp_path)
    os.chown(roots.pidfile, 65534, 65534)
    outcome = run_step(preset_hook("signal", {"pidfile": str(roots.pidfile)}), context(60))
    assert outcome.status == "failed"
    assert "owned by uid 65534 but names PID" in outcome.detail
    assert roots.process.poll() is None

    theirs = subprocess.Popen(["sleep", "60"], user=65534, group=65534)
    try:
        roots.pidfile.write_text(f"{theirs.pid}\n")
        outcome = run_step(preset_hook("signal", {"pidfile": str(roots.pidfile)}), context(60))
        assert outcome.status == "ok", outcome.detail
        assert theirs.wait(5) == -15  # SIGTERM
    finally:
        theirs.kill()
        theirs.wait()


def test_an_unknown_unit_fails_saying_why(tmp_path: Path) -> None:
    """A unit systemd does not run (or no systemd at all here) fails the step with the
    reason, never a traceback."""
    hook = preset_hook("signal", {"unit": "spotwatch-test-no-such.service"})
    outcome = run_step(hook, context(60))
    assert outcome.status == "failed"
    assert "spotwatch-test-no-such.service" in outcome.detail
