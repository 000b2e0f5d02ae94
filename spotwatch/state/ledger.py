"""The hibernation ledger: what the daemon and `spotwatch sleep-hook` tell each other.

Kept apart from state.json because two processes share it, under a lock (see the class).

Like state.json, the ledger tolerates a state folder it cannot write (read-only, full, a
file where the folder should be): the failure is logged once, the process keeps its own view
in memory and goes on, and the next write that works brings the file up to date. Without the
file the daemon and the sleep hook cannot coordinate, but both still act: running the hooks
twice is better than a daemon that stops protecting the instance.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

from spotwatch.logevents import RepeatFilter
from spotwatch.state.files import read_boot_id, write_atomically

log = logging.getLogger("spotwatch.state")

HIBERNATE_FILE = "hibernate.json"
HIBERNATE_LOCK = "hibernate.lock"
BY_DAEMON, BY_SLEEP_HOOK = "daemon", "sleep-hook"
KEEP_TRIGGERED = 16  # notices whose trigger is remembered


def boottime() -> float:
    """CLOCK_BOOTTIME: like the monotonic clock, but it goes on counting while asleep."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


class HibernateLedger:
    """What the daemon and the systemd-sleep hook tell each other, in `state_dir`.

    Two processes act on one hibernation: the daemon (it saw `action=hibernate`) and
    `spotwatch sleep-hook` (systemd is putting the machine to sleep). `hibernate.json`
    says who ran the hibernate hooks for the current sleep cycle, which notices were
    triggered, whether a sleep is under way and how many resumes were handled. Every
    read-modify-write happens under an exclusive `fcntl.flock` on `hibernate.lock`, so a
    claim is granted to exactly one of them however they race; the file itself is replaced
    atomically, so a lock-free read sees a whole file.

    A sleep cycle ends with a resume: `resumes` counts them, and a hooks claim belongs to
    the cycle (`generation`) it was made in, so the next cycle starts unclaimed. The file is
    keyed to the boot like state.json (a resume from hibernation keeps the boot id).
    """

    def __init__(
        self,
        state_dir: str,
        *,
        boot_id: Optional[str] = None,
        clock: Callable[[], float] = boottime,
    ) -> None:
        self.dir = state_dir
        self.path = os.path.join(state_dir, HIBERNATE_FILE)
        self.lock_path = os.path.join(state_dir, HIBERNATE_LOCK)
        self.boot_id = boot_id or read_boot_id()
        self._clock = clock
        self._seen: Optional[Tuple[int, int]] = None  # (mtime_ns, size) of the last read
        self._cached: Dict[str, Any] = self._fresh()
        # What could not be written: newer than the file, so it is our view until a write works.
        self._unsaved: Optional[Dict[str, Any]] = None
        self._failures = RepeatFilter(log, "ledger-write-failed")

    def _fresh(self) -> Dict[str, Any]:
        return {"boot_id": self.boot_id, "resumes": 0, "triggered": {}}

    # ----------------------------------------------------------------- file access

    @contextlib.contextmanager
    def _locked(self) -> Iterator[Dict[str, Any]]:
        """The ledger under the lock; what the block changes is written back on exit. When
        the lock or the file cannot be had, the block still runs (see the module docstring)."""
        fd = self._open_lock()
        try:
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            data = self._read() if self._unsaved is None else self._unsaved
            before = json.dumps(data, sort_keys=True)
            yield data
            after = json.dumps(data, sort_keys=True)
            if after != before or self._unsaved is not None:
                self._write(data, after)
        finally:
            if fd is not None:
                os.close(fd)  # closing the descriptor releases the lock

    def _open_lock(self) -> Optional[int]:
        # O_NOFOLLOW: a symlink planted at the lock's name is refused, not opened as root.
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        try:
            os.makedirs(self.dir, mode=0o700, exist_ok=True)
            return os.open(self.lock_path, flags, 0o600)
        except OSError as failure:
            self._failures.failure(
                f"hibernate ledger lock {self.lock_path} unusable: {failure}; "
                "going on without coordination with the sleep hook",
                logging.ERROR,
                key="unwritable",
            )
            return None

    def _write(self, data: Dict[str, Any], text: str) -> None:
        try:
            write_atomically(self.path, text.encode("utf-8"))  # boot-scoped: no fsync
        except OSError as failure:
            self._unsaved = data
            self._failures.failure(
                f"cannot write {self.path}: {failure}; keeping the hibernation ledger in memory",
                logging.ERROR,
                key="unwritable",
            )
            return
        if self._unsaved is not None:
            self._unsaved = None
            self._failures.recovered(f"{self.path} written again")

    def _read(self) -> Dict[str, Any]:
        try:
            with open(self.path, "rb") as handle:
                value = json.loads(handle.read().decode("utf-8"))
        except (OSError, ValueError, UnicodeDecodeError):
            return self._fresh()
        if not isinstance(value, dict) or value.get("boot_id") != self.boot_id:
            return self._fresh()  # another boot's sleep says nothing about this one
        value.setdefault("resumes", 0)
        if not isinstance(value.get("triggered"), dict):
            value["triggered"] = {}
        return value

    def snapshot(self) -> Dict[str, Any]:
        """The ledger as last written, without the lock; re-read only when the file changed."""
        if self._unsaved is not None:
            return self._unsaved
        try:
            info = os.stat(self.path)
            seen: Optional[Tuple[int, int]] = (info.st_mtime_ns, info.st_size)
        except OSError:
            seen = None
        if seen is None or seen != self._seen:
            self._cached = self._read() if seen is not None else self._fresh()
            self._seen = seen
        return self._cached

    # ----------------------------------------------------------------- hibernate hooks

    def claim_hooks(self, key: str, by: str) -> Optional[Dict[str, Any]]:
        """Ask to run the hibernate hooks for this sleep cycle. None: granted (and recorded);
        else the claim that stands in the way. The daemon only yields to the sleep hook
        (its own earlier claim is for an earlier notice, or for this one before a restart);
        the sleep hook yields to any claim of this cycle."""
        with self._locked() as data:
            claim = data.get("hooks")
            if not isinstance(claim, dict) or claim.get("generation") != data["resumes"]:
                claim = None  # none, or from a cycle a resume has closed
            if claim is not None and BY_SLEEP_HOOK in (by, claim.get("by")):
                return dict(claim)
            data["hooks"] = {
                "key": key,
                "by": by,
                "time": time.time(),
                "generation": data["resumes"],
                "done": False,
            }
            return None

    def hooks_done(self, key: str) -> None:
        with self._locked() as data:
            _mark_hooks_done(data, key)

    def hooks_claim(self) -> Optional[Dict[str, Any]]:
        """The hooks claim of the current cycle, if any (lock-free read)."""
        data = self.snapshot()
        claim = data.get("hooks")
        if isinstance(claim, dict) and claim.get("generation") == data["resumes"]:
            return dict(claim)
        return None

    # ----------------------------------------------------------------- sleep and trigger

    def sleep_started(self) -> None:
        """`sleep-hook pre hibernate`: the machine is on its way to sleep."""
        with self._locked() as data:
            data["sleep"] = {
                "phase": "pre",
                "time": time.time(),
                "boottime": self._clock(),
                "generation": data["resumes"],
            }

    def sleep_under_way(self, window: float) -> Optional[str]:
        """Why we believe a sleep is under way (the sleep hook fired `pre` less than `window`
        seconds ago, counting time asleep, and no resume came since), else None."""
        data = self.snapshot()
        sleep = data.get("sleep")
        if not isinstance(sleep, dict) or sleep.get("phase") != "pre":
            return None
        if sleep.get("generation") != data["resumes"]:
            return None
        try:
            age = self._clock() - float(sleep["boottime"])
        except (KeyError, TypeError, ValueError):
            return None
        if 0 <= age < window:
            return f"the systemd-sleep hook fired {age:.1f} s ago"
        return None

    def triggered(self, key: str) -> Optional[float]:
        """When hibernation was triggered for notice `key`, if it was."""
        value = self.snapshot()["triggered"].get(key)
        return float(value) if isinstance(value, (int, float)) else None

    def claim_trigger(self, key: str) -> bool:
        """The hooks for notice `key` are over: mark them done and record that we trigger
        hibernation for it, in one locked write (each write is a disk round trip on the way
        to the trigger). False if it was triggered already."""
        with self._locked() as data:
            _mark_hooks_done(data, key)
            triggered: Dict[str, Any] = data["triggered"]
            if key in triggered:
                return False
            triggered[key] = time.time()
            for old in sorted(triggered, key=lambda k: triggered[k])[:-KEEP_TRIGGERED]:
                del triggered[old]
            return True

    def set_configured(self, value: Optional[bool]) -> None:
        """Cache IMDS `hibernation/configured` (None: unknown) for the trigger to read."""
        with self._locked() as data:
            data["configured"] = value
            data["configured_at"] = time.time()

    def configured(self) -> Optional[bool]:
        value = self.snapshot().get("configured")
        return value if isinstance(value, bool) else None

    # ----------------------------------------------------------------- resume

    def resumes(self) -> int:
        value = self.snapshot().get("resumes", 0)
        return value if isinstance(value, int) else 0

    def last_resume(self) -> Optional[float]:
        """Wall time of the last resume handled, if any."""
        sleep = self.snapshot().get("sleep")
        if isinstance(sleep, dict) and sleep.get("phase") == "resumed":
            value = sleep.get("time")
            return float(value) if isinstance(value, (int, float)) else None
        return None

    def claim_resume(self, by: str, seen: Optional[int] = None) -> bool:
        """Ask to handle a resume (run the resume hooks). The sleep hook's `post` gets it
        unless the daemon already handled this cycle's resume (the phase says `resumed`
        since the last `pre`); the daemon gets it unless a resume was handled since it last
        looked (`seen`). Granted: the resume count goes up, which closes the cycle."""
        with self._locked() as data:
            sleep = data.get("sleep")
            phase = sleep.get("phase") if isinstance(sleep, dict) else None
            if by == BY_SLEEP_HOOK and phase == "resumed":
                return False
            if by == BY_DAEMON and seen is not None and data["resumes"] > seen:
                return False
            data["resumes"] += 1
            data["sleep"] = {"phase": "resumed", "time": time.time(), "by": by}
            return True


def _mark_hooks_done(data: Dict[str, Any], key: str) -> None:
    claim = data.get("hooks")
    if isinstance(claim, dict) and claim.get("key") == key:
        claim["done"] = True
