"""What the daemon remembers across restarts, in `state_dir`.

`state.json` holds the notice trackers and each response (its notice, deadline and every
step's status). It is replaced atomically (temp file, rename) whenever any of that changes,
so a kill -9 leaves the old or the new file, never half of one. It is keyed to the boot and
the instance: a state file from another boot (the instance was stopped and started) or
another instance (a baked AMI) is set aside, not obeyed. A file that cannot be read is moved
aside with a warning.

Written without fsync (state/files.py says why). The document's shape is state/schema.py.

`poll.json` holds the last poll's time and result, rewritten in place every poll (PollFile).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

from spotwatch.detection.notices import Notice
from spotwatch.logevents import emit
from spotwatch.state.files import (
    POLL_FILE,
    STATE_FILE,
    PollFile,
    iso,
    read_boot_id,
    write_atomically,
)
from spotwatch.state.reader import parse_state, readable_step, unusable_response
from spotwatch.state.schema import (
    FINISHED,
    FORMAT_VERSION,
    INTERRUPTED,
    PENDING,
    RUNNING,
    StepRecord,
)

KEEP_ENDED_RESPONSES = 8

log = logging.getLogger("spotwatch.state")


class StateStore:
    """The state directory; every method is thread-safe."""

    def __init__(self, state_dir: str, *, boot_id: Optional[str] = None) -> None:
        self.dir = state_dir
        self.path = os.path.join(state_dir, STATE_FILE)
        self.poll_path = os.path.join(state_dir, POLL_FILE)
        self._poll_file = PollFile(self.poll_path)
        self.boot_id = boot_id or read_boot_id()
        # `_lock` guards `data` and is held only to change or copy it, never during a file
        # write: hook threads recording their start must not wait behind a disk write.
        # `_write_lock` lets one write happen at a time, in order; a change that waits for it
        # is often carried by the write of a later change (group commit), so three hooks
        # ending together cost one or two writes, not three.
        self._lock = threading.RLock()
        self._write_lock = threading.Lock()
        self._version = 0  # bumped by every change to `data`
        self._saved = 0  # the version the file holds
        self._last_ok: Optional[float] = None
        self.data: Dict[str, Any] = self._fresh()
        # Records a crash may lose ("running") are written by a background thread, off the
        # path from notice to hook start; every other change is written before going on.
        self._wake = threading.Event()
        self._writer: Optional[threading.Thread] = None

    def _fresh(self) -> Dict[str, Any]:
        return {
            "version": FORMAT_VERSION,
            "boot_id": self.boot_id,
            "instance_id": None,
            "trackers": {},
            "responses": {},
        }

    # ----------------------------------------------------------------- loading

    def load(self, instance_id: Optional[str] = None) -> None:
        """Read the state file; set aside one that is unreadable or from another boot."""
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        self._remove_stale_temp_files()
        with self._lock:
            self.data = self._fresh()
            stored = self._read_json(self.path)
            if stored is None:
                stored = self.data
            reason = self._mismatch(stored, instance_id)
            if reason:
                emit(log, logging.INFO, "state-reset", f"starting with fresh state: {reason}")
                # Kept for the first start of a new boot (state/history.py), not obeyed.
                self.data["previous"] = {
                    "responses": stored.get("responses", {}),
                    "why": reason,
                    "boot_id": stored.get("boot_id"),
                    "instance_id": stored.get("instance_id"),
                }
            else:
                self.data.update(stored)
                self._drop_damaged_responses()
            if instance_id:
                self.data["instance_id"] = instance_id
        self.save()  # the file now says which boot and instance it belongs to

    def _remove_stale_temp_files(self) -> None:
        """A kill during `write_atomically` leaves its temp file behind (the rename never
        came); one per crash would pile up forever. Only this daemon writes these two files,
        and it is starting, so any such temp file is an orphan."""
        prefixes = tuple("." + os.path.basename(p) + "." for p in (self.path, self.poll_path))
        try:
            names = os.listdir(self.dir)
        except OSError:
            return
        for name in names:
            if name.startswith(prefixes):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(self.dir, name))

    def _drop_damaged_responses(self) -> None:
        """Keep only response records the daemon can act on. A record whose notice cannot be
        read is dropped whole (which notice it was for is unknown); unreadable step entries
        are dropped one by one, so well-formed ones keep their status (finished stays
        finished). Damage (a hand edit, a bad disk) must not stop the daemon from starting."""
        responses: Dict[str, Any] = self.data["responses"]
        for monitor in list(responses):
            record = responses[monitor]
            problem = unusable_response(record)
            if problem is not None:
                del responses[monitor]
            else:
                steps = record["steps"]
                record["steps"] = [entry for entry in steps if readable_step(entry)]
                dropped = len(steps) - len(record["steps"])
                if not dropped:
                    continue
                problem = f"{dropped} unreadable step record(s) dropped"
            emit(
                log,
                logging.WARNING,
                "state-corrupt",
                f"state file: the {monitor[:40]!r} response record is damaged ({problem})",
            )

    def set_instance_id(self, instance_id: str) -> None:
        self.set_value("instance_id", instance_id)

    def value(self, key: str) -> Any:
        """A top-level entry other parts keep in the state file (e.g. `resume_generation`)."""
        with self._lock:
            return self.data.get(key)

    def set_value(self, key: str, value: Any) -> None:
        with self._lock:
            if self.data.get(key) == value:
                return
            self.data[key] = value
        self.save()

    def _mismatch(self, stored: Dict[str, Any], instance_id: Optional[str]) -> Optional[str]:
        if stored.get("boot_id") != self.boot_id:
            return "the state file is from an earlier boot"
        known = stored.get("instance_id")
        if instance_id and known and known != instance_id:
            return f"the state file is from instance {known}"
        return None

    def _read_json(self, path: str) -> Optional[Dict[str, Any]]:
        try:
            with open(path, "rb") as handle:
                raw = handle.read()
        except FileNotFoundError:
            return None
        except OSError as failure:
            self._set_aside(path, f"cannot read it: {failure.strerror}")
            return None
        value = parse_state(raw)
        if value is None:
            self._set_aside(path, "it is not a spotwatch state file of this version")
            return None
        return dict(value)

    def _set_aside(self, path: str, why: str) -> None:
        aside = f"{path}.corrupt-{int(time.time())}"
        try:
            os.replace(path, aside)
            where = f"moved to {aside}"
        except OSError as failure:
            where = f"could not move it aside: {failure.strerror}"
        emit(log, logging.WARNING, "state-corrupt", f"state file {path} ignored ({why}); {where}")

    # ----------------------------------------------------------------- saving

    def save_soon(self) -> None:
        """Persist shortly, on the writer thread (later saves carry the change anyway)."""
        with self._lock:
            self._version += 1
            if self._writer is None:
                self._writer = threading.Thread(
                    target=self._write_when_dirty, name="state-writer", daemon=True
                )
                self._writer.start()
        self._wake.set()

    def flush(self) -> None:
        """Write now what `save_soon` has not written yet (at shutdown; in tests)."""
        self._persist(self._version)

    def _write_when_dirty(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            self._persist(self._version)

    def save(self) -> None:
        """Write every change made so far; returns once the file holds them. Never call it
        with `_lock` held: it waits for `_write_lock`, whose holder needs `_lock` briefly."""
        with self._lock:
            self._version += 1
            version = self._version
        self._persist(version)

    def _persist(self, version: int) -> None:
        with self._write_lock:
            if self._saved >= version:
                return  # a write since this change was made carried it
            with self._lock:
                payload = json.dumps(self.data, indent=1, sort_keys=True).encode("utf-8")
                writing = self._version
            try:
                write_atomically(self.path, payload)
            except OSError as failure:
                emit(
                    log, logging.ERROR, "state-write-failed", f"cannot write {self.path}: {failure}"
                )
                return
            self._saved = writing

    def record_poll(self, wall: float, result: str, ok: bool) -> None:
        """Cheap, every poll: the last poll and the last successful one."""
        if ok:
            self._last_ok = wall
        body = {"time": iso(wall), "result": result, "last_success": iso(self._last_ok)}
        try:
            self._poll_file.write(json.dumps(body).encode("utf-8"))
        except OSError as failure:
            emit(
                log,
                logging.ERROR,
                "state-write-failed",
                f"cannot write {self.poll_path}: {failure}",
            )

    # ----------------------------------------------------------------- trackers

    def set_tracker(self, monitor: str, value: Dict[str, Any], *, save: bool = True) -> None:
        """`save=False`: the caller's next save (begin_response) writes it along."""
        with self._lock:
            if self.data["trackers"].get(monitor) == value:
                return
            self.data["trackers"][monitor] = value
            if not save:
                self._version += 1  # unwritten: a flush at shutdown still writes it
                return
        self.save()

    # ----------------------------------------------------------------- responses

    def response(self, key: str) -> Optional[Dict[str, Any]]:
        with self._lock:
            found = self.data["responses"].get(key)
            return dict(found) if isinstance(found, dict) else None

    def begin_response(
        self,
        key: str,
        tracker: str,
        notice: Notice,
        deadline_epoch: float,
        steps: List[Tuple[str, str]],
        *,
        durable: bool = True,
    ) -> None:
        """Record a new response with every step (name, kind) pending; `durable=False`:
        written by the background writer (or by the next durable save)."""
        with self._lock:
            responses = self.data["responses"]
            responses.pop(key, None)
            self._prune(responses)
            responses[key] = {
                "tracker": tracker,
                "notice": notice.to_json(),
                "first_seen": iso(time.time()),
                "deadline": iso(deadline_epoch),
                "done": False,
                "steps": [_step_record(name, kind) for name, kind in steps],
            }
        if durable:
            self.save()
        else:
            self.save_soon()

    @staticmethod
    def _prune(responses: Dict[str, Any]) -> None:
        """Ended responses are kept for `status` and a later boot's `start`, the newest few."""
        ended = [k for k, r in responses.items() if r.get("done")]
        for old in ended[: max(0, len(ended) - KEEP_ENDED_RESPONSES + 1)]:
            del responses[old]

    def continue_response(
        self, key: str, steps: List[Tuple[str, str]], deadline_epoch: float
    ) -> None:
        """After a restart: running steps are `interrupted`, new ones added; those recorded
        and not listed now (a step a plan may leave out ran) are kept: not run again."""
        with self._lock:
            record = self.data["responses"][key]
            record["deadline"] = iso(deadline_epoch)
            record.pop("why_ended", None)  # it goes on: what halted it no longer holds
            known = {s["name"]: s for s in record["steps"]}
            for entry in known.values():
                if entry["status"] == RUNNING:
                    entry["status"] = INTERRUPTED
            listed = [known.pop(name, None) or _step_record(name, kind) for name, kind in steps]
            record["steps"] = listed + list(known.values())
        self.save()

    def move_deadline(self, key: str, notice: Notice, deadline_epoch: float) -> None:
        with self._lock:
            record = self.data["responses"].get(key)
            if not record:
                return
            record["notice"] = notice.to_json()
            record["deadline"] = iso(deadline_epoch)
        self.save()

    def finished_status(self, key: str, step: str) -> Optional[str]:
        with self._lock:
            record = self.data["responses"].get(key) or {}
            for entry in record.get("steps", []):
                if entry.get("name") == step and entry.get("status") in FINISHED:
                    status = entry["status"]
                    return str(status)
            return None

    def update_step(
        self, key: str, name: str, kind: str, *, durable: bool = True, **changes: Any
    ) -> None:
        with self._lock:
            record = self.data["responses"].get(key)
            if not record:
                return
            for entry in record["steps"]:
                if entry["name"] == name:
                    entry.update(changes)
                    break
            else:
                record["steps"].append({**_step_record(name, kind), **changes})
        if durable:
            self.save()
        else:
            self.save_soon()

    def end_response(
        self, key: str, *, why: Optional[str] = None, unfinished: Optional[str] = None
    ) -> None:
        """Mark the response ended. `why`: it ended before its plan did (a changed action, a
        shutdown, a deadline passed while the daemon was down); then every step not finished
        gets the status `unfinished` (`interrupted`, or `skipped` when it will never run)."""
        with self._lock:
            record = self.data["responses"].get(key)
            if not record:
                return
            if why is not None:
                record["why_ended"] = why
                for entry in record["steps"]:
                    if unfinished and entry.get("status") not in FINISHED:
                        entry["status"] = unfinished
                        entry["detail"] = entry.get("detail") or why
            if unfinished != INTERRUPTED:  # interrupted by a shutdown: a restart goes on
                record["done"] = True
                record["ended"] = iso(time.time())
        self.save()


def _step_record(name: str, kind: str) -> StepRecord:
    return {
        "name": name,
        "kind": kind,
        "status": PENDING,
        "started": None,
        "ended": None,
        "detail": "",
    }
