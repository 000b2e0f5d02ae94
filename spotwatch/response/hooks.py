"""Checkpoint hooks as real processes, bounded in time and in output.

Each hook runs in a session of its own (so its whole process group can be signalled), stdin from
/dev/null, a minimal environment (README, "Hook environment") and, when `user:` is set, that
user's uid, gid, groups and HOME. It gets `min(timeout, time left)`, re-read while it runs so a
moved notice time moves its end too; then SIGTERM to the group and SIGKILL 5 s later. Its output
is logged line by line, tagged with its name, up to a cap; one loop with a selector reads both
pipes, so no thread can hang on a pipe a leftover child holds open."""

from __future__ import annotations

import logging
import math
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence, Tuple

from spotwatch.config.schema import HookSpec
from spotwatch.logevents import emit
from spotwatch.response.deadline import KILL_GRACE
from spotwatch.response.plan import Step, StepContext, StepOutcome
from spotwatch.response.processes import (
    OUTPUT_LIMIT,
    OUTPUT_LINES,
    OutputPump,
    group_alive,
    kill_group,
    wait_or_stop,
)
from spotwatch.state.schema import FAILED, INTERRUPTED, OK, TIMEOUT, StepStatus

log = logging.getLogger("spotwatch.hooks")

MINIMAL_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SHUTDOWN = "the daemon's shutdown"
MIN_BUDGET = 2.0  # past the deadline a hook still gets this long: never skip silently
DRAIN_AFTER_EXIT = 1.0  # how long to read leftovers after the hook's main process ended


@dataclass(frozen=True)
class HookResult:
    status: StepStatus
    returncode: Optional[int]
    duration: float
    timed_out: bool
    detail: str


class UserError(Exception):
    """`user:` cannot be honoured (unknown user, or we are not root)."""


@dataclass(frozen=True)
class RunAs:
    """Who a hook runs as; `switch` is False when that is already who we are."""

    uid: int
    gid: int
    groups: Tuple[int, ...]
    home: str
    switch: bool


def resolve_user(user: object) -> Tuple[int, int, str]:
    """(uid, gid, home) for a hook's `user:` value (a name, a uid, or a uid written as text)."""
    import pwd  # POSIX-only; imported here so config checks on other platforms still work

    try:
        if isinstance(user, int):
            entry = pwd.getpwuid(user)
        else:
            try:
                entry = pwd.getpwnam(str(user))
            except KeyError:
                if not str(user).isdigit():
                    raise
                entry = pwd.getpwuid(int(str(user)))
    except KeyError:
        raise UserError(f"no such user: {user}") from None
    return entry.pw_uid, entry.pw_gid, entry.pw_dir


def hook_environment(spec: HookSpec, ctx: StepContext, home: Optional[str]) -> Dict[str, str]:
    """Exactly the documented hook environment: the SPOTWATCH_* variables, a minimal PATH,
    HOME when `user:` is set, and the hook's own `env`; nothing of the daemon's environment."""
    notice = ctx.notice
    if ctx.clock.per_hook:  # no deadline of its own: the hook's is its start + its timeout
        deadline, left = time.time() + spec.timeout, spec.timeout
    else:
        deadline, left = ctx.clock.deadline_epoch, ctx.clock.time_left()
    env = {
        "PATH": MINIMAL_PATH,
        "SPOTWATCH_ACTION": notice.action,
        "SPOTWATCH_NOTICE_TIME": notice.time_text,
        "SPOTWATCH_DEADLINE": str(int(deadline)),
        "SPOTWATCH_SECONDS_LEFT": str(max(0, math.floor(left))),
        "SPOTWATCH_INSTANCE_ID": ctx.instance_id,
        "SPOTWATCH_SOURCE": notice.source,
        "SPOTWATCH_DRY_RUN": "1" if ctx.dry_run else "0",
        "SPOTWATCH_CLOUD": ctx.cloud,
    }
    if notice.event_id is not None:  # scheduled events
        env["SPOTWATCH_EVENT_ID"] = notice.event_id
    if notice.event_code is not None:
        env["SPOTWATCH_EVENT_CODE"] = notice.event_code
    if notice.canceled_action is not None:
        env["SPOTWATCH_CANCELED_ACTION"] = notice.canceled_action
    if home is not None:
        env["HOME"] = home
    env.update(spec.env)
    return env


class HookStep(Step):
    kind = "hook"

    def __init__(self, spec: HookSpec, *, hard_deadline: bool = False) -> None:
        super().__init__(f"hook:{spec.name}")
        self.spec = spec
        # True: the deadline is a wall no hook may pass, not even for the minimum a late hook
        # otherwise gets (hibernate: its budget is all the time there is before sleep).
        self.hard_deadline = hard_deadline
        self.last: Optional[HookResult] = None
        self.budget = spec.timeout + KILL_GRACE  # its timeout, then SIGTERM, SIGKILL

    def run(self, ctx: StepContext) -> StepOutcome:
        self.last = run_hook(self.spec, ctx, hard_deadline=self.hard_deadline)
        return StepOutcome(self.last.status, self.last.detail)


def run_hook(spec: HookSpec, ctx: StepContext, *, hard_deadline: bool = False) -> HookResult:
    """Run one hook to its end or its time limit, whichever is first."""
    started = time.monotonic()
    try:
        run_as = run_as_of(spec)
    except UserError as problem:
        emit(log, logging.ERROR, "hook-failed", f"hook {spec.name}: {problem}", hook=spec.name)
        return HookResult(FAILED, None, 0.0, False, str(problem))
    limit = hook_limit(spec, ctx, started, hard_deadline=hard_deadline)
    announce_start(spec, ctx, started, limit, hard_deadline=hard_deadline)
    result = run_program(spec, spec.argv(), ctx, run_as, limit)
    announce_end(spec, result)
    return result


Limit = Callable[[], Tuple[float, str]]


def hook_limit(
    spec: HookSpec, ctx: StepContext, started: float, *, hard_deadline: bool = False
) -> Limit:
    """The monotonic moment a hook started at `started` must end by, and what sets it; asked
    again while it runs, so a moved notice time moves the hook's end too."""

    def limit() -> Tuple[float, str]:
        own = (started + spec.timeout, f"its timeout of {spec.timeout:g} s")
        if ctx.abort.is_set():
            return (time.monotonic(), SHUTDOWN)
        deadline = ctx.clock.deadline
        if hard_deadline:
            return min(own, (deadline, "the deadline"))
        if ctx.clock.per_hook:
            return own
        if deadline < started + MIN_BUDGET:
            floor = f"the {MIN_BUDGET:g} s minimum past the deadline"
            return min(own, (started + MIN_BUDGET, floor))
        return min(own, (deadline, "the deadline"))

    return limit


def announce_start(
    spec: HookSpec,
    ctx: StepContext,
    started: float,
    limit: Limit,
    *,
    hard_deadline: bool = False,
    what: str = "",
) -> None:
    """The hook-start log line (and a warning first when it starts past the deadline)."""
    allowed, why = limit()
    left = ctx.clock.deadline - started
    if not (hard_deadline or ctx.clock.per_hook) and left < MIN_BUDGET:
        # Never skip a hook silently: it still runs, for the floor, and the log says so.
        when = f"passed {-left:.1f} s ago" if left <= 0 else f"is only {left:.1f} s away"
        emit(
            log,
            logging.WARNING,
            "hook-past-deadline",
            f"hook {spec.name}: the deadline {when}; running it anyway for the "
            f"minimum of {MIN_BUDGET:g} s",
            hook=spec.name,
            action=ctx.notice.action,
        )
    emit(
        log,
        logging.INFO,
        "hook-start",
        f"hook {spec.name}{what} started ({allowed - started:.1f} s allowed by {why})",
        hook=spec.name,
        action=ctx.notice.action,
    )


def announce_end(spec: HookSpec, result: HookResult) -> None:
    level = logging.INFO if result.status == OK else logging.WARNING
    emit(
        log,
        level,
        "hook-end",
        f"hook {spec.name}: {result.detail}",
        hook=spec.name,
        status=result.status,
        duration=round(result.duration, 3),
    )


def run_program(
    spec: HookSpec,
    argv: Sequence[str],
    ctx: StepContext,
    run_as: Optional[RunAs],
    limit: Limit,
) -> HookResult:
    """Run `argv` as hook `spec` (its environment, user and output), to its end or to
    `limit()`, whichever is first; the whole process group is ended either way."""
    started = time.monotonic()
    env = hook_environment(spec, ctx, run_as.home if run_as is not None else None)
    try:
        if not argv:
            raise ValueError("the command is empty")
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
            close_fds=True,
            user=run_as.uid if run_as is not None and run_as.switch else None,
            group=run_as.gid if run_as is not None and run_as.switch else None,
            extra_groups=run_as.groups if run_as is not None and run_as.switch else None,
        )
    except (OSError, subprocess.SubprocessError, ValueError) as failure:
        reason = failure.strerror if isinstance(failure, OSError) and failure.strerror else failure
        detail = f"cannot start {argv[0] if argv else 'the hook'}: {reason}"
        emit(log, logging.ERROR, "hook-failed", f"hook {spec.name}: {detail}", hook=spec.name)
        return HookResult(FAILED, None, time.monotonic() - started, False, detail)

    output = OutputPump(spec.name, process)
    stopped_by = wait_or_stop(process, output, limit)
    output.drain(DRAIN_AFTER_EXIT)
    if group_alive(process.pid):  # nothing of a hook outlives it
        kill_group(process.pid, signal.SIGKILL)
    output.close()
    duration = time.monotonic() - started
    return _result(spec, process.returncode, stopped_by, duration, output.dropped)


def run_as_of(spec: HookSpec) -> Optional[RunAs]:
    """Who the hook's programs run as (None: as the daemon); raises UserError."""
    if spec.user is None:
        return None
    uid, gid, home = resolve_user(spec.user)
    if os.geteuid() != 0:
        if uid == os.geteuid():
            return RunAs(uid, gid, (), home, switch=False)
        raise UserError(f"cannot run as user {spec.user}: spotwatch is not running as root")
    import pwd

    name = pwd.getpwuid(uid).pw_name
    return RunAs(uid, gid, tuple(os.getgrouplist(name, gid)), home, switch=True)


def _result(
    spec: HookSpec, code: Optional[int], stopped_by: Optional[str], duration: float, dropped: int
) -> HookResult:
    timed_out = stopped_by is not None
    if stopped_by is not None and stopped_by.startswith(SHUTDOWN):
        # Not finished, not failed: a restarted daemon runs it again while time is left.
        status = INTERRUPTED
        detail = f"stopped by {stopped_by} after {duration:.1f} s; process group ended"
    elif timed_out:
        status = TIMEOUT
        detail = f"stopped by {stopped_by} after {duration:.1f} s; process group ended"
    elif code == 0:
        status, detail = OK, f"exit 0 after {duration:.2f} s"
    elif code is not None and code < 0:
        status, detail = FAILED, f"killed by {signal.Signals(-code).name} after {duration:.2f} s"
    else:
        status, detail = FAILED, f"exit {code} after {duration:.2f} s"
    if dropped:
        detail += (
            f"; {dropped} bytes of output not logged"
            f" (limit {OUTPUT_LIMIT} bytes, {OUTPUT_LINES} lines)"
        )
    return HookResult(status, code, duration, timed_out, detail)
