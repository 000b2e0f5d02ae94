"""From what the watcher observed to responses.

A new notice starts its response (a scheduled event's waits for its moment, and a canceled
one is called off: daemon/scheduled.py); a moved one moves its response's deadline; a
forgotten one is logged. After a restart, an unfinished response is taken up again only once a poll
shows its notice still there, and never past its deadline. Every poll that sees a notice is
remembered, so that steps can ask whether the notice still shows (`confirmed`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from spotwatch.config.schema import Config
from spotwatch.daemon.scheduled import IsScheduled, ScheduledResponses
from spotwatch.detection.notices import Notice, Source, parse_utc_time
from spotwatch.detection.tracker import Change, NoticeTracker, Observation
from spotwatch.detection.watcher import PollReport
from spotwatch.logevents import emit
from spotwatch.response.responder import Responder
from spotwatch.state.schema import SKIPPED
from spotwatch.state.store import StateStore

log = logging.getLogger("spotwatch.daemon")

# A notice "still shows" when a poll saw it within this many of its monitor's intervals.
CONFIRMING_POLLS = 2
CONFIRM_SLACK = 0.5  # seconds: a poll's own duration, so a poll on time is never too late


def log_notice(notice: Notice) -> None:
    """The `notice` log event (journal: SPOTWATCH_EVENT=notice) of a notice a response is
    about to answer."""
    emit(
        log,
        logging.WARNING,
        "notice",
        f"{notice.action} notice for {notice.time_text} (from {notice.source})",
        action=notice.action,
        notice_time=notice.time_text,
        source=notice.source,
    )


class NoticeIntake:
    def __init__(
        self,
        responder: Responder,
        store: StateStore,
        *,
        cadence_of: Callable[[str], float],
        is_scheduled: IsScheduled,
        config: Callable[[], Config] = Config,
        relabel: Optional[Source] = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.responder = responder
        self.store = store
        self._cadence_of = cadence_of  # a tracker's monitor's interval between checks
        # `spotwatch rehearse`: every notice carries this source instead of its own.
        self._relabel = relabel
        self._clock = clock
        self._seen_at: Dict[str, float] = {}  # tracker -> monotonic time a poll last saw it
        self._pending: Dict[str, str] = {}  # tracker -> unfinished response, after a restart
        self.scheduled = ScheduledResponses(responder, store, config, self._start, is_scheduled)

    # ----------------------------------------------------------------- at start

    def restore(self, trackers: Mapping[str, NoticeTracker]) -> None:
        """Which responses a restart interrupted: the one to each tracker's current notice
        waits for a poll to confirm it. Any other unfinished response of a tracker is ended
        for good: only the current notice is ever taken up, so nothing else would end it
        (an earlier notice superseded, one a state file no longer knows)."""
        for name, tracker in trackers.items():
            known = tracker.known
            current = tracker.response_key(name) if known is not None else None
            for key, record in self._unfinished_of(name):
                if (
                    known is not None
                    and key == current
                    and record["notice"].get("action") == known.action
                ):
                    self._pending[name] = key
                    continue
                why = (
                    f"superseded by a {known.action} notice"
                    if known is not None
                    else "its notice was not known when the daemon came back"
                )
                self.store.end_response(key, why=why, unfinished=SKIPPED)
        self.scheduled.restore(trackers)

    def _unfinished_of(self, tracker_name: str) -> List[Tuple[str, Dict[str, Any]]]:
        """The response records of `tracker_name` not done (a record without its tracker
        is the one its key names: `spot#3`, or `spot` from before generations were kept)."""
        records = dict(self.store.value("responses") or {})  # a copy: others write it
        return [
            (key, record)
            for key, record in records.items()
            if isinstance(record, dict)
            and not record.get("done")
            and isinstance(record.get("notice"), dict)
            and (record.get("tracker") or key.split("#", 1)[0]) == tracker_name
        ]

    # ----------------------------------------------------------------- watcher events

    def on_notice(self, tracker_name: str, observation: Observation, key: str) -> bool:
        """Act on a NEW, MOVED or FORGOTTEN notice; `key` is the response record a new one
        gets. False: its response could not start (the caller forgets the notice, so the
        next poll tries again)."""
        notice = self._labelled(observation.notice)
        if observation.change is Change.NEW and notice is not None:
            self._seen_at[tracker_name] = self._clock()
            stale = self._pending.pop(tracker_name, None)
            if stale is not None:
                self.store.end_response(
                    stale, why=f"superseded by a {notice.action} notice", unfinished=SKIPPED
                )
            log_notice(notice)
            if not self.scheduled.is_scheduled(tracker_name):
                return self._start(key, tracker_name, notice)
            if notice.action != "cancel":
                self.scheduled.wait_or_start(tracker_name, key, notice)
            elif self.scheduled.canceled(tracker_name, observation.previous, key):
                return self._start(key, tracker_name, notice)
        elif observation.change is Change.MOVED and notice is not None:
            emit(
                log,
                logging.WARNING,
                "notice-moved",
                f"{notice.action} notice time moved to {notice.time_text}; the deadline follows",
                action=notice.action,
                notice_time=notice.time_text,
            )
            self.responder.move(key, notice)
            self.scheduled.moved(tracker_name, notice)
        elif observation.change is Change.FORGOTTEN and observation.previous is not None:
            gone = observation.previous
            emit(
                log,
                logging.INFO,
                "notice-gone",
                f"{gone.action} notice for {gone.time_text} is gone; a new one will be handled",
                action=gone.action,
            )
            if self.scheduled.is_scheduled(tracker_name):
                self.scheduled.gone(tracker_name, self._labelled(gone) or gone, key)
        return True

    def _start(self, key: str, tracker_name: str, notice: Notice) -> bool:
        try:
            self.responder.start(key, tracker_name, notice, confirmed=self.confirmer(tracker_name))
        except Exception:  # never foreseen; the notice must not be lost with it
            log.exception("the response to the %s notice could not start", notice.action)
            return False
        return True

    def on_poll(self, report: PollReport, trackers: Mapping[str, NoticeTracker]) -> None:
        now = self._clock()
        for name in report.seen:
            self._seen_at[name] = now
        for name, key in list(self._pending.items()):
            tracker = trackers.get(name)
            if tracker is None or tracker.known is None:
                del self._pending[name]
                self.store.end_response(
                    key, why="its notice was gone when the daemon came back", unfinished=SKIPPED
                )
            elif name in report.seen:
                del self._pending[name]
                self._resume(name, key, tracker.known)
        self.scheduled.start_due()

    def _resume(self, name: str, key: str, known: Notice) -> None:
        record = self.store.response(key) or {}
        deadline = parse_utc_time(str(record.get("deadline") or ""))
        if deadline is not None and deadline.timestamp() <= time.time():
            emit(
                log,
                logging.WARNING,
                "response-not-resumed",
                f"not finishing the {known.action} response a restart interrupted: its "
                "deadline has passed",
                action=known.action,
            )
            self.store.end_response(
                key, why="its deadline passed while the daemon was not running", unfinished=SKIPPED
            )
            return
        emit(
            log,
            logging.WARNING,
            "response-resumed",
            f"finishing the response to {known.action} interrupted by a restart",
            action=known.action,
        )
        notice = self._labelled(known)
        assert notice is not None
        self.responder.start(key, name, notice, resume=True, confirmed=self.confirmer(name))

    # ----------------------------------------------------------------- helpers

    def confirmer(self, tracker_name: str) -> Callable[[], bool]:
        """Whether a recent poll saw this tracker's notice (for irreversible steps)."""

        def confirmed() -> bool:
            seen = self._seen_at.get(tracker_name)
            window = CONFIRMING_POLLS * self._cadence_of(tracker_name) + CONFIRM_SLACK
            return seen is not None and self._clock() - seen <= window

        return confirmed

    def labelled(self, notice: Notice) -> Notice:
        """The notice as hooks and events see it (a rehearsal's say "rehearsal")."""
        if self._relabel is None:
            return notice
        return replace(notice, source=self._relabel, origin=notice.signal)

    def _labelled(self, notice: Optional[Notice]) -> Optional[Notice]:
        if notice is None or self._relabel is None:
            return notice
        return replace(notice, source=self._relabel, origin=notice.signal)
