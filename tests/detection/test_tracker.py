"""The notice tracker's de-duplication rules (CONTRACT.md §3), fed poll by poll."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any, Optional

import pytest

from spotwatch.detection.notices import SOURCE_INSTANCE_ACTION, Notice
from spotwatch.detection.tracker import ABSENT_POLLS_TO_FORGET, Change, NoticeTracker

BASE = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def notice(action: str = "terminate", offset: int = 0) -> Notice:
    when = BASE + timedelta(seconds=offset)
    return Notice(action, when, when.strftime("%Y-%m-%dT%H:%M:%SZ"), SOURCE_INSTANCE_ACTION)


def feed(tracker: NoticeTracker, *seen: Optional[Notice]) -> list[Change]:
    return [tracker.observe(item).change for item in seen]


def test_nothing_seen_is_none() -> None:
    """No notice and nothing known: NONE, every time."""
    tracker = NoticeTracker()
    assert feed(tracker, None, None) == [Change.NONE, Change.NONE]
    assert tracker.known is None


def test_same_notice_while_present() -> None:
    """A notice is NEW once, then SAME for as long as it keeps appearing."""
    tracker = NoticeTracker()
    first = tracker.observe(notice())
    assert first.change is Change.NEW and first.notice == notice() and first.previous is None
    assert feed(tracker, *[notice()] * 10) == [Change.SAME] * 10


def test_moved_time_is_moved_not_new() -> None:
    """A notice whose time moves stays the same notice; the newest time is kept."""
    tracker = NoticeTracker()
    tracker.observe(notice())
    moved = tracker.observe(notice(offset=60))
    assert moved.change is Change.MOVED
    assert moved.notice == notice(offset=60) and moved.previous == notice()
    assert tracker.known == notice(offset=60)
    assert tracker.observe(notice(offset=60)).change is Change.SAME


@pytest.mark.parametrize("gap", [1, 2])
def test_short_absence_then_back_is_same(gap: int) -> None:
    """Absent for 1 or 2 successful polls, then back: ABSENT, then SAME (not handled again)."""
    tracker = NoticeTracker()
    tracker.observe(notice())
    assert feed(tracker, *[None] * gap) == [Change.ABSENT] * gap
    assert tracker.observe(notice()).change is Change.SAME


def test_absence_run_is_reset_by_reappearance() -> None:
    """Two absences, back, two more absences: still not forgotten (the run must be consecutive)."""
    tracker = NoticeTracker()
    tracker.observe(notice())
    feed(tracker, None, None, notice())
    assert feed(tracker, None, None) == [Change.ABSENT, Change.ABSENT]
    assert tracker.known == notice()


def test_three_absences_forget_then_new() -> None:
    """Absent for 3 consecutive successful polls: FORGOTTEN; when it shows again it is NEW."""
    assert ABSENT_POLLS_TO_FORGET == 3
    tracker = NoticeTracker()
    tracker.observe(notice())
    assert feed(tracker, None, None) == [Change.ABSENT, Change.ABSENT]
    gone = tracker.observe(None)
    assert gone.change is Change.FORGOTTEN and gone.previous == notice() and gone.notice is None
    assert tracker.known is None
    assert tracker.observe(None).change is Change.NONE
    assert tracker.observe(notice()).change is Change.NEW


def test_failed_polls_do_not_count() -> None:
    """Failed polls are not fed to the tracker, so an outage between absences changes nothing:
    two absences, an outage of any length, one more absence → forgotten only on the third."""
    tracker = NoticeTracker()
    tracker.observe(notice())
    feed(tracker, None, None)
    # ... any number of failed polls here: the watcher does not call observe() ...
    assert tracker.absent_polls == 2
    assert tracker.observe(None).change is Change.FORGOTTEN


def test_action_change_is_new() -> None:
    """A different action is a new notice at once, naming the one it replaces."""
    tracker = NoticeTracker()
    tracker.observe(notice("stop"))
    changed = tracker.observe(notice("terminate"))
    assert changed.change is Change.NEW
    assert changed.notice == notice("terminate") and changed.previous == notice("stop")


def test_action_change_during_absence_is_new() -> None:
    """An absent notice that comes back with another action is new, and the run is reset."""
    tracker = NoticeTracker()
    tracker.observe(notice("hibernate"))
    tracker.observe(None)
    assert tracker.observe(notice("terminate")).change is Change.NEW
    assert tracker.absent_polls == 0


def test_rearm() -> None:
    """After `rearm` (resume from hibernation) the same notice is NEW again."""
    tracker = NoticeTracker()
    tracker.observe(notice("hibernate"))
    tracker.observe(None)
    assert tracker.rearm() == notice("hibernate")
    assert tracker.known is None and tracker.absent_polls == 0
    assert tracker.observe(notice("hibernate")).change is Change.NEW
    assert NoticeTracker().rearm() is None


def test_json_round_trip() -> None:
    """`to_json` → JSON text → `from_json` keeps the known notice and the absence run, so a
    restarted daemon does not handle the notice again, nor forget it early or late."""
    tracker = NoticeTracker()
    tracker.observe(notice(offset=30))
    tracker.observe(None)
    restored = NoticeTracker.from_json(json.loads(json.dumps(tracker.to_json())))
    assert restored.known == notice(offset=30)
    assert restored.absent_polls == 1
    assert restored.observe(notice(offset=30)).change is Change.SAME
    empty = NoticeTracker.from_json(NoticeTracker().to_json())
    assert empty.known is None and empty.absent_polls == 0


@pytest.mark.parametrize(
    "data",
    [
        None,
        "",
        "garbage",
        [],
        42,
        {"known": "terminate"},
        {"known": ["terminate"]},
        {"known": {"action": "terminate"}},
        {"known": {"action": "terminate", "time": 5, "source": "x"}},
        {"known": {"action": "terminate", "time": "soon", "source": "x"}},
        {"known": {"action": None, "time": "2026-01-02T03:04:05Z", "source": "x"}},
        {"known": None, "absent_polls": "many"},
        {"known": None, "absent_polls": float("inf")},
        {"known": None, "absent_polls": float("nan")},
        {"known": None, "absent_polls": None},
        {"known": None, "absent_polls": [1]},
    ],
)
def test_malformed_state_gives_fresh_tracker(data: Any) -> None:
    """Whatever a corrupt state file holds, `from_json` returns a fresh tracker, never raises."""
    tracker = NoticeTracker.from_json(data)
    assert tracker.known is None and tracker.absent_polls == 0


def test_negative_absent_polls_clamped() -> None:
    """A negative stored count is read as zero."""
    stored = {"known": notice().to_json(), "absent_polls": -5}
    tracker = NoticeTracker.from_json(stored)
    assert tracker.known == notice() and tracker.absent_polls == 0
