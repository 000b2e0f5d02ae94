"""The files of the state directory: names, atomic replacement, the per-poll record.

No fsync anywhere here: everything that loses the page cache (a kernel crash, power loss,
stop/start) also starts a new boot, whose daemon sets the old state aside anyway; a daemon
crash or restart loses nothing, and a hibernation keeps the page cache in its image. An
fsync would buy no safety and cost a disk round trip on the way from a notice to its hooks.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from datetime import datetime, timezone
from typing import Optional

STATE_FILE = "state.json"
POLL_FILE = "poll.json"
BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"


def iso(epoch: Optional[float]) -> Optional[str]:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


def read_boot_id(path: str = BOOT_ID_PATH) -> str:
    try:
        with open(path, encoding="ascii") as handle:
            return handle.read().strip()
    except OSError:
        return "unknown"


def write_atomically(path: str, data: bytes, *, mode: Optional[int] = None) -> None:
    """Replace `path` with `data` so that readers see the old or the new file, whole. No
    fsync (the module's docstring says why). The temp file is
    mkstemp's: a random name opened O_EXCL|O_NOFOLLOW, so nothing planted in the folder is
    written through; the rename replaces a symlink at `path` itself, never its target.
    `mode`: the file's mode (default mkstemp's 0600)."""
    folder = os.path.dirname(path) or "."
    fd, temp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", dir=folder)
    try:
        try:
            if mode is not None:
                os.fchmod(fd, mode)
            rest = memoryview(data)
            while rest:  # raw writes: a buffered file object cost more than the write itself
                rest = rest[os.write(fd, rest) :]
        finally:
            os.close(fd)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


POLL_RECORD_SIZE = 256


class PollFile:
    """`poll.json`, rewritten in place by one pwrite of a fixed-size, space-padded record.

    Why not temp file + rename like state.json: on ext4 a rename over an existing file
    flushes the new file's data (auto_da_alloc), which cost ~1.2 ms of wall time and ~0.14 ms
    of CPU on every poll (bench/). One small pwrite at offset 0 costs a few microseconds.
    A reader can in principle catch a torn record; `spotwatch status` reads again then.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: Optional[int] = None

    def write(self, record: bytes) -> None:
        if self._fd is not None and os.fstat(self._fd).st_nlink == 0:
            self.close()  # someone removed the file: write a new one
        if self._fd is None:
            # O_NOFOLLOW: root must never write through a symlink planted at this name.
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW
            self._fd = os.open(self.path, flags, 0o644)
        os.pwrite(self._fd, record.ljust(POLL_RECORD_SIZE) + b"\n", 0)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


