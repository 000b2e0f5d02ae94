"""Checkpoint hooks as real processes, bounded in time and in output.

Each hook runs in a session of its own (so its whole process group can be signalled),
stdin from /dev/null, a minimal environment (CONTRACT.md §4) and, when `user:` is set, that
user's uid, gid, groups and HOME. It gets `min(timeout, time left)`, re-read while it runs
so a moved notice time moves its end too; then SIGTERM to the group and SIGKILL 5 s later.
Its output is logged line by line, tagged with its name, up to a cap; one loop with a
selector reads both pipes, so no thread can hang on a pipe a leftover child holds open.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import selectors
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

from spotwatch.config.schema import HookSpec
from spotwatch.logevents import emit
from spotwatch.response.deadline import KILL_GRACE
from spotwatch.response.plan import Step, StepContext, StepOutcome
from spotwatch.state.schema import FAILED, OK, TIMEOUT, StepStatus

log = logging.getLogger("spotwatch.hooks")

MINIMAL_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MIN_BUDGET = 2.0  # past the deadline a hook still gets this long: never skip silently
LINE_LIMIT = 4096  # a longer line is logged in pieces
OUTPUT_LIMIT = 256 * 1024  # bytes of output logged per hook; the rest is counted, not kept
# Lines logged per hook: millions of one-byte lines must not flood the journal (whose rate
# limit would then also swallow spotwatch's own messages) or cost a log record each.
OUTPUT_LINES = 2000
DRAIN_AFTER_EXIT = 1.0  # how long to read leftovers after the hook's main process ended
WAIT_SLICE = 0.25


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
    }
    if notice.event_id is not None:  # scheduled events
        env["SPOTWATCH_EVENT_ID"] = notice.event_id
    if notice.event_code is not None:
        env["SPOTWATCH_EVENT_CODE"] = notice.event_code
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

    def run(self, ctx: StepContext) -> StepOutcome:
        self.last = run_hook(self.spec, ctx, hard_deadline=self.hard_deadline)
        return StepOutcome(self.last.status, self.last.detail)


def run_hook(spec: HookSpec, ctx: StepContext, *, hard_deadline: bool = False) -> HookResult:
    """Run one hook to its end or its time limit, whichever is first."""
    started = time.monotonic()
    try:
        run_as = _run_as(spec)
    except UserError as problem:
        emit(log, logging.ERROR, "hook-failed", f"hook {spec.name}: {problem}", hook=spec.name)
        return HookResult(FAILED, None, 0.0, False, str(problem))
    env = hook_environment(spec, ctx, run_as.home if run_as is not None else None)

    def limit() -> Tuple[float, str]:
        """The monotonic moment this hook must end by, and what sets it; asked again while
        it runs, so a moved notice time moves the hook's end too."""
        own = (started + spec.timeout, f"its timeout of {spec.timeout:g} s")
        if ctx.abort.is_set():
            return (time.monotonic(), "the daemon's shutdown")
        deadline = ctx.clock.deadline
        if hard_deadline:
            return min(own, (deadline, "the deadline"))
        if ctx.clock.per_hook:
            return own
        if deadline < started + MIN_BUDGET:
            floor = f"the {MIN_BUDGET:g} s minimum past the deadline"
            return min(own, (started + MIN_BUDGET, floor))
        return min(own, (deadline, "the deadline"))

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
        f"hook {spec.name} started ({allowed - started:.1f} s allowed by {why})",
        hook=spec.name,
        action=ctx.notice.action,
    )
    argv = spec.argv()
    try:
        if not argv:
            raise ValueError("the command is empty")
        process = subprocess.Popen(
            argv,
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

    output = _OutputPump(spec.name, process)
    stopped_by = _wait(process, output, limit)
    output.drain(DRAIN_AFTER_EXIT)
    if group_alive(process.pid):  # nothing of a hook outlives it
        _kill_group(process.pid, signal.SIGKILL)
    output.close()
    duration = time.monotonic() - started
    result = _result(spec, process.returncode, stopped_by, duration, output.dropped)
    level = logging.INFO if result.status == OK else logging.WARNING
    emit(
        log,
        level,
        "hook-end",
        f"hook {spec.name}: {result.detail}",
        hook=spec.name,
        status=result.status,
        duration=round(duration, 3),
    )
    return result


def _run_as(spec: HookSpec) -> Optional[RunAs]:
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


def _wait(
    process: subprocess.Popen[bytes],
    output: _OutputPump,
    limit: Callable[[], Tuple[float, str]],
) -> Optional[str]:
    """Pump output until the process ends; on reaching `limit()` stop the group and
    return what the limit was (None when the hook ended by itself)."""
    while process.poll() is None:
        moment, why = limit()
        remaining = moment - time.monotonic()
        if remaining <= 0:
            if _stop_group(process, output):
                return f"{why} (SIGTERM, then SIGKILL after {KILL_GRACE:g} s)"
            return f"{why} (SIGTERM)"
        output.pump(min(remaining, WAIT_SLICE))
    return None


def _stop_group(process: subprocess.Popen[bytes], output: _OutputPump) -> bool:
    """SIGTERM to the whole group; SIGKILL KILL_GRACE later to whatever of it is left.

    The grace lasts while any member lives, not only the leader: with `sh -c "a; b"` the
    shell dies at once and `b` must still get its grace to save what it has."""
    _kill_group(process.pid, signal.SIGTERM)
    grace_end = time.monotonic() + KILL_GRACE
    while not (process.poll() is not None and not group_alive(process.pid)):
        left = grace_end - time.monotonic()
        if left <= 0:
            _kill_group(process.pid, signal.SIGKILL)
            process.wait()
            return True
        output.pump(min(WAIT_SLICE, left))
    return False


def group_members(pgid: int) -> List[int]:
    """Live (non-zombie) processes of process group `pgid`, from /proc.

    `os.killpg(pgid, 0)` is not enough: orphans that already exited stay zombies in the
    group until init reaps them, and in a container init may never do so."""
    members: List[int] = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return [pgid] if _killpg_alive(pgid) else []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 2 and fields[0] not in (b"Z", b"X") and int(fields[2]) == pgid:
            members.append(int(entry))
    return members


def group_alive(pgid: int) -> bool:
    # killpg first: when the group is gone entirely (the usual end of a hook: its leader,
    # reaped, was the only member) that answers at once, without reading all of /proc,
    # which costs milliseconds on a busy host (it sat between the hooks and the trigger).
    return _killpg_alive(pgid) and bool(group_members(pgid))


def _killpg_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _result(
    spec: HookSpec, code: Optional[int], stopped_by: Optional[str], duration: float, dropped: int
) -> HookResult:
    timed_out = stopped_by is not None
    if timed_out:
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


class _OutputPump:
    """Reads a hook's stdout and stderr without blocking and logs whole lines, bounded."""

    def __init__(self, name: str, process: subprocess.Popen[bytes]) -> None:
        self.name = name
        self.process = process
        self.selector = selectors.DefaultSelector()
        self.partial: Dict[int, bytearray] = {}
        self.stream_names: Dict[int, str] = {}
        self.logged = 0
        self.lines = 0
        self.dropped = 0
        for stream, label in ((process.stdout, "stdout"), (process.stderr, "stderr")):
            assert stream is not None
            fd = stream.fileno()
            os.set_blocking(fd, False)
            self.selector.register(fd, selectors.EVENT_READ)
            self.partial[fd] = bytearray()
            self.stream_names[fd] = label
        self._streams = [process.stdout, process.stderr]

    def pump(self, timeout: float) -> None:
        if not self.selector.get_map():
            # Both pipes are closed: wait for the process itself, not a whole slice (and
            # once it is gone, for the slice: its leftovers are watched through /proc).
            if self.process.poll() is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(max(0.0, timeout))
            else:
                time.sleep(max(0.0, timeout))
            return
        for key, _ in self.selector.select(max(0.0, timeout)):
            fd = key.fd
            assert isinstance(fd, int)
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                continue
            except OSError:
                chunk = b""
            if not chunk:
                self._flush(fd)
                self.selector.unregister(fd)
                continue
            self._take(fd, chunk)

    def drain(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while self.selector.get_map() and time.monotonic() < end:
            self.pump(end - time.monotonic())

    def close(self) -> None:
        for fd in list(self.partial):
            self._flush(fd)
        self.selector.close()
        for stream in self._streams:
            if stream is not None:
                stream.close()

    def full(self) -> bool:
        return self.logged >= OUTPUT_LIMIT or self.lines >= OUTPUT_LINES

    def _take(self, fd: int, chunk: bytes) -> None:
        if self.full():
            # Past the cap: count, do not split into lines (a hook printing millions of short
            # lines must not cost the daemon a Python loop per line).
            self.dropped += len(chunk)
            return
        buffer = self.partial[fd]
        buffer += chunk
        lines: List[bytes] = []
        while True:
            cut = buffer.find(b"\n", 0, LINE_LIMIT)
            if cut >= 0:
                lines.append(bytes(buffer[:cut]))
                del buffer[: cut + 1]
            elif len(buffer) >= LINE_LIMIT:  # an overlong line is logged in pieces
                lines.append(bytes(buffer[:LINE_LIMIT]))
                del buffer[:LINE_LIMIT]
            else:
                break
        for line in lines:
            self._log(fd, line)

    def _flush(self, fd: int) -> None:
        buffer = self.partial.get(fd)
        if buffer:
            if self.full():
                self.dropped += len(buffer)
            else:
                self._log(fd, bytes(buffer))
            buffer.clear()

    def _log(self, fd: int, line: bytes) -> None:
        if self.full():
            self.dropped += len(line) + 1
            return
        self.logged += len(line) + 1
        self.lines += 1
        emit(
            log,
            logging.INFO,
            "hook-output",
            f"[{self.name}] {line.decode('utf-8', 'replace').rstrip()}",
            hook=self.name,
            stream=self.stream_names[fd],
        )
