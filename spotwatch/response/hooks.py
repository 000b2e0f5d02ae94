"""Checkpoint hooks as real processes, bounded in time and in output.

Each hook runs in a session of its own (so its whole process group can be signalled),
stdin from /dev/null, a minimal environment (CONTRACT.md §4) and, when `user:` is set, that
user's uid, gid, groups and HOME. It gets `min(timeout, time left)`, re-read while it runs
so a moved notice time moves its end too; then SIGTERM to the group and SIGKILL 5 s later.
Its output is logged line by line, tagged with its name, up to a cap; one loop with a
selector reads both pipes, so no thread can hang on a pipe a leftover child holds open.
"""

from __future__ import annotations

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
from spotwatch.response.plan import FAILED, OK, TIMEOUT, Step, StepContext, StepOutcome

log = logging.getLogger("spotwatch.hooks")

MINIMAL_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
KILL_GRACE = 5.0  # SIGTERM, then SIGKILL this long after (CONTRACT.md §4)
MIN_BUDGET = 2.0  # past the deadline a hook still gets this long: never skip silently
LINE_LIMIT = 4096  # a longer line is logged in pieces
OUTPUT_LIMIT = 256 * 1024  # bytes of output logged per hook; the rest is counted, not kept
DRAIN_AFTER_EXIT = 1.0  # how long to read leftovers after the hook's main process ended
WAIT_SLICE = 0.25


@dataclass(frozen=True)
class HookResult:
    status: str
    returncode: Optional[int]
    duration: float
    timed_out: bool
    detail: str


class UserError(Exception):
    """`user:` cannot be honoured (unknown user, or we are not root)."""


def resolve_user(user: object) -> Tuple[int, int, str]:
    """(uid, gid, home) for a hook's `user:` value (a name or a uid)."""
    import pwd  # POSIX-only; imported here so config checks on other platforms still work

    try:
        entry = pwd.getpwuid(user) if isinstance(user, int) else pwd.getpwnam(str(user))
    except KeyError:
        raise UserError(f"no such user: {user}") from None
    return entry.pw_uid, entry.pw_gid, entry.pw_dir


def hook_environment(spec: HookSpec, ctx: StepContext, home: Optional[str]) -> Dict[str, str]:
    notice = ctx.notice
    env = {
        "PATH": MINIMAL_PATH,
        "LANG": "C.UTF-8",
        "SPOTWATCH_ACTION": notice.action,
        "SPOTWATCH_NOTICE_TIME": notice.time_text,
        "SPOTWATCH_DEADLINE": str(int(ctx.clock.deadline_epoch)),
        "SPOTWATCH_SECONDS_LEFT": str(max(0, math.floor(ctx.clock.time_left()))),
        "SPOTWATCH_INSTANCE_ID": ctx.instance_id,
        "SPOTWATCH_SOURCE": notice.source,
        "SPOTWATCH_DRY_RUN": "1" if ctx.dry_run else "0",
    }
    if home is not None:
        env["HOME"] = home
    env.update(spec.env)
    return env


class HookStep(Step):
    kind = "hook"

    def __init__(self, spec: HookSpec, *, end_by: Optional[float] = None) -> None:
        super().__init__(f"hook:{spec.name}")
        self.spec = spec
        # A monotonic moment no hook may pass (hibernate's total budget); None: no such cap.
        self.end_by = end_by
        self.last: Optional[HookResult] = None

    def run(self, ctx: StepContext) -> StepOutcome:
        self.last = run_hook(self.spec, ctx, end_by=self.end_by)
        return StepOutcome(self.last.status, self.last.detail)


def run_hook(spec: HookSpec, ctx: StepContext, *, end_by: Optional[float] = None) -> HookResult:
    """Run one hook to its end or its time limit, whichever is first."""
    started = time.monotonic()
    try:
        popen_user = _user_arguments(spec)
    except UserError as problem:
        emit(log, logging.ERROR, "hook-failed", f"hook {spec.name}: {problem}", hook=spec.name)
        return HookResult(FAILED, None, 0.0, False, str(problem))
    home = popen_user.pop("home", None)
    env = hook_environment(spec, ctx, home if isinstance(home, str) else None)

    def limit() -> float:
        """The monotonic moment this hook must end by, asked again while it runs."""
        if end_by is not None:  # hibernate: its budget stands in for the (absent) warning
            return min(started + spec.timeout, end_by)
        return min(started + spec.timeout, max(ctx.clock.deadline, started + MIN_BUDGET))

    emit(
        log,
        logging.INFO,
        "hook-start",
        f"hook {spec.name} started ({limit() - started:.1f} s allowed)",
        hook=spec.name,
        action=ctx.notice.action,
    )
    try:
        process = subprocess.Popen(
            spec.argv(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
            close_fds=True,
            **popen_user,  # type: ignore[arg-type]
        )
    except OSError as failure:
        detail = f"cannot start {spec.argv()[0]}: {failure.strerror or failure}"
        emit(log, logging.ERROR, "hook-failed", f"hook {spec.name}: {detail}", hook=spec.name)
        return HookResult(FAILED, None, time.monotonic() - started, False, detail)

    output = _OutputPump(spec.name, process)
    timed_out = _wait(process, output, limit)
    output.drain(DRAIN_AFTER_EXIT)
    _kill_group(process.pid, signal.SIGKILL)  # nothing of a timed-out hook outlives it
    output.close()
    duration = time.monotonic() - started
    result = _result(spec, process.returncode, timed_out, duration, output.dropped)
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


def _user_arguments(spec: HookSpec) -> Dict[str, object]:
    if spec.user is None:
        return {}
    uid, gid, home = resolve_user(spec.user)
    if os.geteuid() != 0:
        if uid == os.geteuid():
            return {"home": home}
        raise UserError(f"cannot run as user {spec.user}: spotwatch is not running as root")
    import pwd

    name = pwd.getpwuid(uid).pw_name
    groups = os.getgrouplist(name, gid)
    return {"user": uid, "group": gid, "extra_groups": groups, "home": home}


def _wait(
    process: subprocess.Popen[bytes], output: _OutputPump, limit: Callable[[], float]
) -> bool:
    """Pump output until the process ends; on reaching `limit()` stop the group. True if so."""
    while process.poll() is None:
        remaining = limit() - time.monotonic()
        if remaining <= 0:
            _stop_group(process, output)
            return True
        output.pump(min(remaining, WAIT_SLICE))
    return False


def _stop_group(process: subprocess.Popen[bytes], output: _OutputPump) -> None:
    _kill_group(process.pid, signal.SIGTERM)
    grace_end = time.monotonic() + KILL_GRACE
    while process.poll() is None and time.monotonic() < grace_end:
        output.pump(min(WAIT_SLICE, grace_end - time.monotonic()))
    _kill_group(process.pid, signal.SIGKILL)
    process.wait()


def _kill_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _result(
    spec: HookSpec, code: Optional[int], timed_out: bool, duration: float, dropped: int
) -> HookResult:
    if timed_out:
        status, detail = TIMEOUT, f"timed out after {duration:.1f} s, process group killed"
    elif code == 0:
        status, detail = OK, f"exit 0 after {duration:.2f} s"
    elif code is not None and code < 0:
        status, detail = FAILED, f"killed by {signal.Signals(-code).name} after {duration:.2f} s"
    else:
        status, detail = FAILED, f"exit {code} after {duration:.2f} s"
    if dropped:
        detail += f"; {dropped} bytes of output not logged (limit {OUTPUT_LIMIT})"
    return HookResult(status, code, duration, timed_out, detail)


class _OutputPump:
    """Reads a hook's stdout and stderr without blocking and logs whole lines, bounded."""

    def __init__(self, name: str, process: subprocess.Popen[bytes]) -> None:
        self.name = name
        self.selector = selectors.DefaultSelector()
        self.partial: Dict[int, bytearray] = {}
        self.stream_names: Dict[int, str] = {}
        self.logged = 0
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

    def _take(self, fd: int, chunk: bytes) -> None:
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
            self._log(fd, bytes(buffer))
            buffer.clear()

    def _log(self, fd: int, line: bytes) -> None:
        if self.logged >= OUTPUT_LIMIT:
            self.dropped += len(line) + 1
            return
        self.logged += len(line) + 1
        emit(
            log,
            logging.INFO,
            "hook-output",
            f"[{self.name}] {line.decode('utf-8', 'replace').rstrip()}",
            hook=self.name,
            stream=self.stream_names[fd],
        )
