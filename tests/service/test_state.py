"""The state directory: atomic, keyed to the boot and instance, and never a crash."""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import List, Tuple

from testkit import response_record

from spotwatch.detection.notices import SOURCE_INSTANCE_ACTION, Notice
from spotwatch.response.journals import StoreJournal
from spotwatch.response.plan import Step, StepContext, StepOutcome
from spotwatch.state.files import write_atomically
from spotwatch.state.schema import OK, RUNNING
from spotwatch.state.store import StateStore


class _Named(Step):
    kind = "hook"

    def run(self, ctx: StepContext) -> StepOutcome:
        return StepOutcome(OK)


NOTICE = Notice(
    "terminate",
    datetime(2026, 11, 21, 12, 0, tzinfo=timezone.utc),
    "2026-11-21T12:00:00Z",
    SOURCE_INSTANCE_ACTION,
)


def _pairs(steps: List[Step]) -> List[Tuple[str, str]]:
    return [(step.name, step.kind) for step in steps]


def _store(path: Path, boot: str = "boot-1", instance: str = "i-1") -> StateStore:
    store = StateStore(str(path), boot_id=boot)
    store.load(instance)
    return store


def test_writes_are_whole_files_with_no_temp_left_behind(tmp_path):
    """write_atomically replaces the file in one rename and cleans up after itself."""
    target = tmp_path / "state.json"
    for n in range(20):
        write_atomically(str(target), json.dumps({"n": n}).encode())
    assert json.loads(target.read_text()) == {"n": 19}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_step_progress_survives_a_reload(tmp_path):
    """What a restarted daemon reads back: finished steps with their status, running ones
    marked interrupted when the response is continued."""
    store = _store(tmp_path)
    first, second = _Named("hook:a"), _Named("hook:b")
    store.begin_response("spot", "spot", NOTICE, NOTICE.epoch - 10, _pairs([first, second]))
    journal = StoreJournal(store, "spot")
    journal.step_started(first, 1.0)
    journal.step_ended(first, StepOutcome(OK, "exit 0"), 1.0, 2.0)
    journal.step_started(second, 2.0)
    store.flush()  # "running" is written by a background thread; don't race it

    again = _store(tmp_path)
    assert again.finished_status("spot", "hook:a") == OK
    assert again.finished_status("spot", "hook:b") is None
    statuses = {s["name"]: s["status"] for s in again.response("spot")["steps"]}
    assert statuses == {"hook:a": OK, "hook:b": RUNNING}
    again.continue_response("spot", _pairs([first, second]), NOTICE.epoch - 10)
    statuses = {s["name"]: s["status"] for s in again.response("spot")["steps"]}
    assert statuses == {"hook:a": OK, "hook:b": "interrupted"}


def test_state_from_another_boot_is_not_obeyed(tmp_path):
    """After a stop/start (new boot id) the old response is kept for the record only."""
    store = _store(tmp_path, boot="boot-1")
    store.begin_response("spot", "spot", NOTICE, NOTICE.epoch, _pairs([_Named("hook:a")]))
    later = _store(tmp_path, boot="boot-2")
    assert later.response("spot") is None
    assert "earlier boot" in later.data["previous"]["why"]


def test_state_from_another_instance_is_not_obeyed(tmp_path):
    """A state directory baked into an AMI does not carry over to the instances launched."""
    _store(tmp_path, instance="i-baker").begin_response("spot", "spot", NOTICE, NOTICE.epoch, [])
    assert _store(tmp_path, instance="i-new").response("spot") is None


def test_a_corrupt_file_is_moved_aside(tmp_path, caplog):
    """Garbage, a wrong version or a non-object: moved aside with a warning, fresh state."""
    for garbage in (b"\x00\xff", b"[1, 2]", b'{"version": 99}', b""):
        (tmp_path / "state.json").write_bytes(garbage)
        store = _store(tmp_path)
        assert store.response("spot") is None
    aside = [p for p in tmp_path.iterdir() if ".corrupt-" in p.name]
    assert aside, "the corrupt file should be kept for inspection"
    assert "ignored" in caplog.text


def test_an_unwritable_state_dir_is_logged_not_raised(tmp_path, caplog):
    """A full or read-only disk must not kill the daemon mid-response."""
    store = _store(tmp_path)
    os.chmod(tmp_path, 0o500)
    try:
        if os.geteuid() == 0:  # root writes anyway: take the folder away instead
            store.path = str(tmp_path / "missing" / "state.json")
        store.begin_response("spot", "spot", NOTICE, NOTICE.epoch, _pairs([]))
        store.record_poll(0.0, "ok", True)
    finally:
        os.chmod(tmp_path, 0o700)
    assert "cannot write" in caplog.text


def test_the_poll_file_says_the_last_poll_and_last_success(tmp_path):
    """poll.json: every poll's result, and when the last successful one was."""
    store = _store(tmp_path)
    store.record_poll(1_000_000.0, "ok", True)
    store.record_poll(1_000_005.0, "error", False)
    data = json.loads((tmp_path / "poll.json").read_text())
    assert data["result"] == "error"
    assert data["time"].startswith("1970-01-12T13:46:45")
    assert data["last_success"].startswith("1970-01-12T13:46:40")


def test_the_poll_file_is_rewritten_in_place_and_recreated_when_removed(tmp_path):
    """poll.json costs one pwrite a poll (no rename); every read parses; removed, it comes
    back at the next poll."""
    store = _store(tmp_path)
    inode = None
    for n in range(50):
        store.record_poll(1_000_000.0 + n, "ok", True)
        text = (tmp_path / "poll.json").read_text()
        assert json.loads(text)["result"] == "ok"
        current = (tmp_path / "poll.json").stat().st_ino
        assert inode in (None, current)
        inode = current
    (tmp_path / "poll.json").unlink()
    store.record_poll(1_000_100.0, "error", False)
    assert json.loads((tmp_path / "poll.json").read_text())["result"] == "error"


class _SlowDisk:
    """Stands in for a disk whose writes take `seconds`: wraps the real write_atomically
    (the file is still really written) and counts the writes."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.writes = 0
        self.writing = threading.Event()

    def __call__(self, path: str, data: bytes) -> None:
        self.writing.set()
        time.sleep(self.seconds)
        write_atomically(path, data)
        self.writes += 1


def _ending_on_a_slow_disk(tmp_path, monkeypatch, seconds: float, count: int):
    """A response of `count` steps whose first step ends while writes take `seconds`;
    returns once that step's write is under way."""
    store = _store(tmp_path)
    steps = [_Named(f"hook:{n}") for n in range(count)]
    store.begin_response("spot", "spot", NOTICE, NOTICE.epoch, _pairs(steps))
    disk = _SlowDisk(seconds)
    monkeypatch.setattr("spotwatch.state.store.write_atomically", disk)
    journal = StoreJournal(store, "spot")
    ending = threading.Thread(target=journal.step_ended, args=(steps[0], StepOutcome(OK), 1, 2))
    ending.start()
    assert disk.writing.wait(5)
    return store, disk, journal, steps, ending


def test_recording_a_step_start_never_waits_for_a_write_under_way(tmp_path, monkeypatch):
    """A hook thread recording "running" must not queue behind another step's write: the
    store's lock is held to change the data, not while the file is written."""
    store, _disk, journal, steps, ending = _ending_on_a_slow_disk(tmp_path, monkeypatch, 0.5, 3)
    began = time.monotonic()
    journal.step_started(steps[1], 3.0)
    assert time.monotonic() - began < 0.25  # not the 0.5 s write
    ending.join()
    store.flush()
    again = _store(tmp_path)
    statuses = {s["name"]: s["status"] for s in again.response("spot")["steps"]}
    assert statuses == {"hook:0": OK, "hook:1": RUNNING, "hook:2": "pending"}


def test_changes_made_together_share_writes(tmp_path, monkeypatch):
    """Eight steps ending while a write is under way: each returns only once its change is
    on disk, but the waiting changes go out together (group commit), not in eight writes."""
    _, disk, journal, steps, first = _ending_on_a_slow_disk(tmp_path, monkeypatch, 0.3, 9)
    rest = [
        threading.Thread(target=journal.step_ended, args=(step, StepOutcome(OK), 1, 2))
        for step in steps[1:]
    ]
    for thread in rest:
        thread.start()
    for thread in [first, *rest]:
        thread.join()
    assert disk.writes <= 3  # the first, then one (rarely two) for the other eight
    on_disk = json.loads((tmp_path / "state.json").read_text())
    assert {s["status"] for s in response_record(on_disk)["steps"]} == {OK}
