"""Checkpoint hooks as real processes: limits, process groups, environment, users, output.

Every hook here is a real process; nothing of spotwatch is mocked. `KILL_GRACE` is lowered
in some tests (it is a parameter); one test keeps the real 5 s.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator, List, Tuple, Union

import pytest
from response_support import (
    INSTANCE_ID,
    ListJournal,
    Records,
    ThrowawayUser,
    context,
    live_group_members,
    move_notice,
    pid_alive,
    read_floats,
    whole_second_notice,
)

from spotwatch.config.schema import HookSpec
from spotwatch.response import hooks, processes
from spotwatch.response.build import hook_stages
from spotwatch.response.deadline import NoticeClock
from spotwatch.response.hooks import MIN_BUDGET, HookStep, run_hook
from spotwatch.response.plan import Plan, StepContext, StepOutcome
from spotwatch.response.processes import OUTPUT_LIMIT, OUTPUT_LINES
from spotwatch.response.runner import Runner
from spotwatch.state.schema import FAILED, OK, TIMEOUT


@pytest.fixture
def short_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(processes, "KILL_GRACE", 0.5)


@pytest.fixture
def leftovers() -> Iterator[List[int]]:
    """Process groups a test started; whatever is left of them is killed afterwards."""
    groups: List[int] = []
    yield groups
    for pgid in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


# ----------------------------------------------------------------- time limits


def test_timeout_kills_the_whole_group_including_a_background_child(
    tmp_path: Path, records: Records, leftovers: List[int]
) -> None:
    """A hook that forks `sleep 300` into the background and then hangs is stopped at its
    timeout; afterwards no process of its group is left (checked in /proc, zombies aside)."""
    pids = tmp_path / "pids"
    spec = HookSpec("hang", f"sleep 300 & echo $$ $! > {pids}; sleep 300", timeout=0.6)
    started = time.monotonic()
    result = run_hook(spec, context(60))
    elapsed = time.monotonic() - started
    leader, background = (int(p) for p in pids.read_text().split())
    leftovers.append(leader)
    assert result.status == TIMEOUT and result.timed_out
    assert "its timeout of 0.6 s" in result.detail
    assert 0.5 <= elapsed < 3.0, elapsed
    assert live_group_members(leader) == []
    assert not pid_alive(background)


def test_deadline_caps_a_hook_and_the_remaining_hooks_still_run(
    tmp_path: Path, records: Records, leftovers: List[int]
) -> None:
    """A hook with a long timeout is stopped at the deadline (min(timeout, time left)), its
    group dies with it, and the next hook still runs afterwards (on the floor budget)."""
    pgid_file, after = tmp_path / "pgid", tmp_path / "after"
    ctx = context(1.2)
    plan = Plan(
        ctx.notice,
        stages=hook_stages(
            [
                HookSpec("slow", f"echo $$ > {pgid_file}; sleep 300 & sleep 300", timeout=60),
                HookSpec("next", f"echo ran > {after}", order=1),
            ]
        ),
    )
    outcomes = Runner(plan, ctx, ListJournal()).run()
    leftovers.append(int(pgid_file.read_text()))
    assert outcomes["hook:slow"].status == TIMEOUT
    assert "the deadline" in outcomes["hook:slow"].detail
    assert live_group_members(int(pgid_file.read_text())) == []
    assert outcomes["hook:next"].status == OK
    assert after.read_text() == "ran\n"


def test_sigterm_trapping_hook_gets_sigkill_after_the_grace(
    tmp_path: Path, records: Records, short_grace: None, leftovers: List[int]
) -> None:
    """A hook whose whole group ignores SIGTERM is SIGKILLed KILL_GRACE (lowered to 0.5 s)
    after the SIGTERM, and the result says so."""
    pgid_file = tmp_path / "pgid"
    spec = HookSpec("stubborn", f"trap '' TERM; echo $$ > {pgid_file}; sleep 300", timeout=0.5)
    started = time.monotonic()
    result = run_hook(spec, context(60))
    elapsed = time.monotonic() - started
    leftovers.append(int(pgid_file.read_text()))
    assert result.status == TIMEOUT
    assert "SIGKILL after 0.5 s" in result.detail
    assert 0.9 <= elapsed < 3.0, elapsed
    assert live_group_members(int(pgid_file.read_text())) == []


def test_real_five_second_grace_between_sigterm_and_sigkill(
    tmp_path: Path, records: Records, leftovers: List[int]
) -> None:
    """With the real KILL_GRACE, a hook that notes each SIGTERM and keeps running is killed
    5 s (not sooner) after the first SIGTERM."""
    assert processes.KILL_GRACE == 5.0
    terms, pgid_file = tmp_path / "terms", tmp_path / "pgid"
    spec = HookSpec(
        "stubborn",
        f"echo $$ > {pgid_file}; trap 'date +%s.%N >> {terms}' TERM; while :; do sleep 0.05; done",
        timeout=0.3,
    )
    result = run_hook(spec, context(60))
    ended = time.time()
    leftovers.append(int(pgid_file.read_text()))
    first_term = read_floats(str(terms))[0]
    assert result.status == TIMEOUT and "SIGKILL after 5 s" in result.detail
    assert 4.7 <= ended - first_term < 9.0, ended - first_term  # generous: a loaded machine
    assert live_group_members(int(pgid_file.read_text())) == []


def test_grace_covers_the_whole_group_not_only_its_leader(
    tmp_path: Path, records: Records, leftovers: List[int]
) -> None:
    """`sh -c "saver; echo after"`: the shell (group leader) dies at SIGTERM at once, but the
    saver it started still gets its grace to finish its checkpoint, and is not SIGKILLed."""
    saved, pgid_file = tmp_path / "saved", tmp_path / "pgid"
    saver = f"trap 'sleep 0.5; echo saved > {saved}; exit 0' TERM; while :; do sleep 0.05; done"
    spec = HookSpec("saver", f'echo $$ > {pgid_file}; sh -c "{saver}"; echo after', timeout=0.4)
    result = run_hook(spec, context(60))
    leftovers.append(int(pgid_file.read_text()))
    assert saved.read_text() == "saved\n"
    assert result.status == TIMEOUT
    assert "SIGKILL" not in result.detail, result.detail
    assert live_group_members(int(pgid_file.read_text())) == []


def test_hook_time_is_the_smaller_of_timeout_and_time_left(records: Records) -> None:
    """Timeout 0.6 s with a far deadline ends at 0.6 s; timeout 60 s with the deadline
    2.5 s away ends at the deadline; the log's start line says which limit applies."""
    started = time.monotonic()
    by_timeout = run_hook(HookSpec("t", "sleep 300", timeout=0.6), context(60))
    middle = time.monotonic()
    by_deadline = run_hook(HookSpec("d", "sleep 300", timeout=60), context(2.5))
    ended = time.monotonic()
    assert by_timeout.status == TIMEOUT and "its timeout" in by_timeout.detail
    assert 0.55 <= middle - started < 1.6
    assert by_deadline.status == TIMEOUT and "the deadline" in by_deadline.detail
    assert 2.3 <= ended - middle < 3.6
    assert "allowed by its timeout" in records.messages("hook-start", "t")[0]
    assert "allowed by the deadline" in records.messages("hook-start", "d")[0]


def test_moved_notice_time_moves_a_running_hooks_end(records: Records) -> None:
    """While a hook runs, NoticeClock.update (0.5 s in) moves its end: later (deadline
    1.5 s -> 3 s) and earlier (deadline 8 s -> 2.2 s)."""
    for first, moved_to, expected in ((1.5, 2.5, 3.0), (8.0, 1.7, 2.2)):
        ctx = context(first)

        def move(ctx: StepContext = ctx, moved_to: float = moved_to) -> None:
            time.sleep(0.5)
            move_notice(ctx, moved_to)

        mover = threading.Thread(target=move)
        started = time.monotonic()
        mover.start()
        result = run_hook(HookSpec("long", "sleep 300", timeout=60), ctx)
        elapsed = time.monotonic() - started
        mover.join()
        assert result.status == TIMEOUT
        assert expected - 0.3 <= elapsed < expected + 1.0, (first, moved_to, elapsed)


def test_past_the_deadline_a_hook_still_runs_for_the_floor_and_the_log_says_so(
    tmp_path: Path, records: Records
) -> None:
    """With the deadline 5 s gone, a quick hook still runs (and succeeds), a slow one is
    stopped after MIN_BUDGET, SECONDS_LEFT is 0, and a warning names the floor."""
    out = tmp_path / "left"
    quick = run_hook(HookSpec("quick", f"echo $SPOTWATCH_SECONDS_LEFT > {out}"), context(-5))
    started = time.monotonic()
    slow = run_hook(HookSpec("slow", "sleep 300", timeout=60), context(-5))
    elapsed = time.monotonic() - started
    assert quick.status == OK and out.read_text() == "0\n"
    assert slow.status == TIMEOUT and "minimum past the deadline" in slow.detail
    assert MIN_BUDGET - 0.1 <= elapsed < MIN_BUDGET + 1.5
    for name in ("quick", "slow"):
        (warning,) = records.messages("hook-past-deadline", name)
        assert "the deadline passed 5.0 s ago" in warning or "passed 4.9 s ago" in warning
        assert f"minimum of {MIN_BUDGET:g} s" in warning


# ----------------------------------------------------------------- environment


def test_environment_is_exactly_the_contract_and_nothing_leaks(
    records: Records, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hook sees PATH, the SPOTWATCH_* variables with §4's values (and §10's
    SPOTWATCH_CLOUD) and its own `env`, nothing else: a canary in the daemon's environment
    does not reach it."""
    monkeypatch.setenv("SPOTWATCH_TEST_CANARY", "leaked")
    monkeypatch.setenv("HOME", "/leaked-home")
    for dry_run, action, source in (
        (False, "terminate", "instance-action"),
        (True, "stop", "rehearsal"),
    ):
        notice = whole_second_notice(70, action, source)
        ctx = StepContext(NoticeClock(notice, 10.0), INSTANCE_ID, dry_run=dry_run, cloud="aws")
        name = f"env-{action}"
        spec = HookSpec(name, ("/usr/bin/env",), env={"CHECKPOINT_BUCKET": "s3://b"})
        assert run_hook(spec, ctx).status == OK
        seen = dict(line.split("=", 1) for line in records.output(name))
        expected_left = int(notice.epoch - 10.0 - time.time())
        assert set(seen) == {
            "PATH",
            "SPOTWATCH_ACTION",
            "SPOTWATCH_NOTICE_TIME",
            "SPOTWATCH_DEADLINE",
            "SPOTWATCH_SECONDS_LEFT",
            "SPOTWATCH_INSTANCE_ID",
            "SPOTWATCH_SOURCE",
            "SPOTWATCH_DRY_RUN",
            "SPOTWATCH_CLOUD",
            "CHECKPOINT_BUCKET",
        }, seen
        assert seen["SPOTWATCH_CLOUD"] == "aws"
        assert seen["PATH"] == hooks.MINIMAL_PATH
        assert seen["SPOTWATCH_ACTION"] == action
        assert seen["SPOTWATCH_NOTICE_TIME"] == notice.time_text
        assert seen["SPOTWATCH_DEADLINE"] == str(int(notice.epoch) - 10)
        assert expected_left <= int(seen["SPOTWATCH_SECONDS_LEFT"]) <= expected_left + 1
        assert seen["SPOTWATCH_INSTANCE_ID"] == INSTANCE_ID
        assert seen["SPOTWATCH_SOURCE"] == source
        assert seen["SPOTWATCH_DRY_RUN"] == ("1" if dry_run else "0")
        assert seen["CHECKPOINT_BUCKET"] == "s3://b"


def test_stdin_is_dev_null_argv_has_no_shell_and_a_string_does(
    tmp_path: Path, records: Records
) -> None:
    """stdin is /dev/null (so `cat` ends at once); an argv list is passed verbatim, shell
    characters and all; a string command goes through /bin/sh -c."""
    stdin = run_hook(HookSpec("stdin", ("/bin/readlink", "/proc/self/fd/0")), context(60))
    cat = run_hook(HookSpec("cat", ("/bin/cat",), timeout=5), context(60))
    argv = run_hook(HookSpec("argv", ("/bin/echo", "$HOME", "a;b", "$((1+1))")), context(60))
    shell = run_hook(HookSpec("shell", "echo $((40+2)) | tr 4 X; echo $0"), context(60))
    assert stdin.status == cat.status == argv.status == shell.status == OK
    assert records.output("stdin") == ["/dev/null"]
    assert cat.duration < 2.0
    assert records.output("argv") == ["$HOME a;b $((1+1))"]
    assert records.output("shell") == ["X2", "/bin/sh"]


def test_output_is_logged_line_by_line_tagged_with_the_hook(records: Records) -> None:
    """stdout and stderr lines reach the log tagged with the hook's name and the stream,
    including a last line without a newline."""
    result = run_hook(HookSpec("talk", "echo one; echo two >&2; printf three"), context(60))
    assert result.status == OK
    streams = {
        message: data.get("stream")
        for event, message, data in records.events
        if event == "hook-output" and data.get("hook") == "talk"
    }
    assert streams == {"[talk] one": "stdout", "[talk] two": "stderr", "[talk] three": "stdout"}


def test_failing_hook_reports_its_exit_status(records: Records) -> None:
    """A non-zero exit is FAILED with the status in the detail and the end log line."""
    result = run_hook(HookSpec("bad", "exit 3"), context(60))
    assert result.status == FAILED and result.returncode == 3
    assert result.detail.startswith("exit 3 ")
    assert "exit 3" in records.messages("hook-end", "bad")[0]


# ----------------------------------------------------------------- commands that cannot start


def test_missing_or_not_executable_command_fails_cleanly_and_the_rest_go_on(
    tmp_path: Path, records: Records
) -> None:
    """A missing program and a file without x bit are FAILED with a readable reason; an
    unknown program in a shell string is the shell's exit 127; the next stage still runs."""
    script = tmp_path / "noexec.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o644)
    marker = tmp_path / "ran"
    ctx = context(60)
    plan = Plan(
        ctx.notice,
        stages=hook_stages(
            [
                HookSpec("missing", ("/nonexistent/checkpoint", "--fast")),
                HookSpec("noexec", (str(script),)),
                HookSpec("unknown", "no-such-program-here --flag"),
                HookSpec("after", f"echo ok > {marker}", order=1),
            ]
        ),
    )
    outcomes = Runner(plan, ctx, ListJournal()).run()
    assert outcomes["hook:missing"] == StepOutcome(
        FAILED, "cannot start /nonexistent/checkpoint: No such file or directory"
    )
    assert outcomes["hook:noexec"].status == FAILED
    assert outcomes["hook:noexec"].detail == f"cannot start {script}: Permission denied"
    assert outcomes["hook:unknown"].status == FAILED
    assert outcomes["hook:unknown"].detail.startswith("exit 127")
    assert outcomes["hook:after"].status == OK and marker.read_text() == "ok\n"
    assert "No such file" in records.messages("hook-failed", "missing")[0]


def test_empty_command_fails_cleanly(records: Records) -> None:
    """An empty argv is a clean FAILED, not an exception out of the runner."""
    result = run_hook(HookSpec("empty", ()), context(60))
    assert result.status == FAILED and "empty" in result.detail


# ----------------------------------------------------------------- users


def test_user_switches_uid_gid_groups_and_home(
    records: Records, throwaway_user: ThrowawayUser
) -> None:
    """As root, `user:` (by name, by uid, and by uid written as text) runs the hook with the
    user's uid, primary gid, supplementary groups and HOME."""
    user = throwaway_user
    forms: Tuple[Union[str, int], ...] = (user.name, user.uid, str(user.uid))
    for index, who in enumerate(forms):
        name = f"as-{index}"
        spec = HookSpec(name, 'id -u; id -g; id -G; echo "$HOME"', user=who)
        result = run_hook(spec, context(60))
        assert result.status == OK, result.detail
        uid, gid, groups, home = records.output(name)
        assert int(uid) == user.uid
        assert int(gid) == user.gid
        assert sorted(int(g) for g in groups.split()) == sorted({user.gid, user.extra_gid})
        assert home == user.home


def test_unknown_user_fails_cleanly(records: Records) -> None:
    """A user that does not exist is FAILED with its name in the detail."""
    result = run_hook(HookSpec("ghost", "true", user="no-such-user-swt"), context(60))
    assert result.status == FAILED and result.detail == "no such user: no-such-user-swt"


NOT_ROOT_SCRIPT = """
import json, os, pwd, sys, subprocess, selectors
sys.path.insert(0, sys.argv[2])
sys.path.insert(0, sys.argv[3])
from response_support import context
from spotwatch.config.schema import HookSpec
from spotwatch.response.hooks import run_hook
uid, gid = (int(x) for x in sys.argv[1].split(":"))
os.setgroups([])
os.setgid(gid)
os.setuid(uid)
other = run_hook(HookSpec("as-root", "true", user="root"), context(60))
own = run_hook(HookSpec("as-self", 'echo "$HOME" > /dev/null', user=uid), context(60))
print(json.dumps([other.status, other.detail, own.status]))
"""


def test_not_root_with_another_user_is_a_clean_failure(throwaway_user: ThrowawayUser) -> None:
    """A daemon that is not root (a real process that dropped to the throwaway user) fails
    a hook with `user: root` cleanly and says why; `user:` naming itself still runs."""
    tests_dir = str(Path(__file__).parent)
    repo = str(Path(__file__).parents[2])
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            NOT_ROOT_SCRIPT,
            f"{throwaway_user.uid}:{throwaway_user.gid}",
            repo,
            tests_dir,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    status, detail, own = json.loads(done.stdout.strip().splitlines()[-1])
    assert status == FAILED
    assert detail == "cannot run as user root: spotwatch is not running as root"
    assert own == OK


# ----------------------------------------------------------------- output volume


def rss_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


class PeakRss:
    """Samples this process's VmRSS every 20 ms while active."""

    def __init__(self) -> None:
        self.peak = rss_kib()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss_kib())

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.mark.parametrize(
    "command, size",
    [
        ("head -c 50000000 /dev/zero | tr '\\0' 'x'", 50_000_000),
        ("yes | head -c 20000000", 20_000_000),
        ("yes abcdefghij | head -c 20000000 1>&2", 20_000_000),
    ],
    ids=["one-50MB-line", "10M-short-lines", "stderr-lines"],
)
def test_megabytes_of_output_do_not_grow_memory_and_truncation_is_noted(
    records: Records, command: str, size: int
) -> None:
    """A hook printing tens of megabytes (one endless line, or millions of short lines)
    costs the daemon < 30 MB of RSS at the peak, logs at most OUTPUT_LIMIT bytes and
    OUTPUT_LINES lines, and the result detail says how much was not logged."""
    records.keep_output = False
    before = rss_kib()
    started = time.monotonic()
    with PeakRss() as peak:
        result = run_hook(HookSpec("spew", command, timeout=60), context(120))
    elapsed = time.monotonic() - started
    growth_mb = (peak.peak - before) / 1024
    print(f"{command!r}: {elapsed:.2f} s, peak RSS growth {growth_mb:.1f} MB")
    assert result.status == OK, result.detail
    assert growth_mb < 30, growth_mb
    assert records.output_lines <= OUTPUT_LINES
    assert records.output_bytes <= OUTPUT_LIMIT + 200 * records.output_lines
    assert "bytes of output not logged" in result.detail
    dropped = int(result.detail.split("; ")[1].split()[0])
    assert size - OUTPUT_LIMIT - 8192 <= dropped <= size
    assert elapsed < 20


def test_hook_step_wraps_run_hook(records: Records) -> None:
    """HookStep is named `hook:<name>`, of kind `hook`, and reports the hook's result."""
    step = HookStep(HookSpec("wrapped", "exit 4"))
    outcome = step.run(context(60))
    assert step.name == "hook:wrapped" and step.kind == "hook"
    assert outcome.status == FAILED and outcome.detail.startswith("exit 4")
    assert step.last is not None and step.last.returncode == 4
