"""A hook's process group and its output: waiting with a time limit, stopping the whole group
(SIGTERM, then SIGKILL after the grace), and reading stdout and stderr into the log, bounded.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import signal
import subprocess
import time
from typing import Callable, Dict, List, Optional, Tuple

from spotwatch.logevents import emit
from spotwatch.response.deadline import KILL_GRACE

log = logging.getLogger("spotwatch.hooks")

LINE_LIMIT = 4096  # a longer line is logged in pieces
OUTPUT_LIMIT = 256 * 1024  # bytes of output logged per hook; the rest is counted, not kept
# Lines logged per hook: millions of one-byte lines must not flood the journal (whose rate
# limit would then also swallow spotwatch's own messages) or cost a log record each.
OUTPUT_LINES = 2000
WAIT_SLICE = 0.25


def wait_or_stop(
    process: subprocess.Popen[bytes],
    output: OutputPump,
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


def _stop_group(process: subprocess.Popen[bytes], output: OutputPump) -> bool:
    """SIGTERM to the whole group; SIGKILL KILL_GRACE later to whatever of it is left.

    The grace lasts while any member lives, not only the leader: with `sh -c "a; b"` the
    shell dies at once and `b` must still get its grace to save what it has."""
    kill_group(process.pid, signal.SIGTERM)
    grace_end = time.monotonic() + KILL_GRACE
    while not (process.poll() is not None and not group_alive(process.pid)):
        left = grace_end - time.monotonic()
        if left <= 0:
            kill_group(process.pid, signal.SIGKILL)
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


def kill_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


class OutputPump:
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
