"""Scheduled events in the intake: a response that waits for its moment, and cancels.

A scheduled event is known days ahead; its response starts at NotBefore -
`scheduled_events.lead` (at once when that has passed). Until then it is only an entry in
`waiting`, looked at after every poll: no thread is held, so a shutdown has nothing to wait
for, and a restart finds the event again in its tracker (state.json) and waits anew.

An event is canceled when its response has started and it then shows `canceled`, or is gone
for 3 polls before its NotBefore: the response starts no further step (what runs finishes)
and a `cancel` response runs the cancel hooks and puts back what was changed
(response/build.py). An event called off before its response started just stops waiting.
An event that spotwatch let go ahead (a `release` step of its response finished, as Azure's
StartRequests) and then left the list went ahead: that is no cancel.

Which trackers hold scheduled events is the monitors' say (`Monitor.scheduled`): AWS's
scheduled events and Azure's alike. The events that wait are written to state.json
(`waiting`, after every poll) for `status`: each with its response record's key, its notice,
when its response starts and its deadline.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Callable, Dict, Mapping, Optional, Tuple

from spotwatch.config.schema import Config
from spotwatch.detection.notices import Notice, response_starts
from spotwatch.detection.tracker import NoticeTracker
from spotwatch.logevents import emit
from spotwatch.response.build import RELEASE
from spotwatch.response.deadline import deadline_clock
from spotwatch.response.responder import Responder
from spotwatch.state.files import iso
from spotwatch.state.history import CANCELED
from spotwatch.state.schema import OK, SKIPPED
from spotwatch.state.store import StateStore

log = logging.getLogger("spotwatch.daemon")

WAITING = "waiting"  # state.json: the events whose response waits (`status` reads them)
StartResponse = Callable[[str, str, Notice], object]  # (response key, tracker, notice)
IsScheduled = Callable[[str], bool]  # does this tracker hold a scheduled event?


class ScheduledResponses:
    def __init__(
        self,
        responder: Responder,
        store: StateStore,
        config: Callable[[], Config],
        start: StartResponse,
        is_scheduled: IsScheduled,
        *,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.is_scheduled = is_scheduled
        self.responder = responder
        self.store = store
        self._config = config
        self._start = start
        self._wall = wall
        self.waiting: Dict[str, Tuple[str, Notice]] = {}  # tracker -> (response key, notice)

    def start_at(self, notice: Notice) -> float:
        """The wall moment the response to this event starts."""
        return response_starts(notice, self._config().scheduled_events.lead)

    # ----------------------------------------------------------------- new events

    def wait_or_start(self, tracker: str, key: str, notice: Notice) -> None:
        if self._wall() >= self.start_at(notice):
            self._start(key, tracker, notice)
            return
        self.waiting[tracker] = (key, notice)
        emit(
            log,
            logging.INFO,
            "response-scheduled",
            f"{notice.event_code} event {notice.event_id}: the {notice.action} response starts "
            f"{self.start_at(notice) - self._wall():.0f} s from now (NotBefore - lead)",
            action=notice.action,
            event_id=notice.event_id,
        )

    def moved(self, tracker: str, notice: Notice) -> None:
        if tracker in self.waiting:
            self.waiting[tracker] = (self.waiting[tracker][0], notice)

    def start_due(self) -> None:
        """After every poll: start the responses whose moment has come."""
        now = self._wall()
        for tracker, (key, notice) in list(self.waiting.items()):
            if now >= self.start_at(notice):
                del self.waiting[tracker]
                self._start(key, tracker, notice)
        self._publish()

    def _publish(self) -> None:
        """What waits, for `status` (written only when it changed)."""
        config = self._config()
        waiting = {
            tracker: {
                "key": key,
                "notice": notice.to_json(),
                "starts": iso(self.start_at(notice)),
                "deadline": iso(deadline_clock(notice, config).deadline_epoch),
            }
            for tracker, (key, notice) in self.waiting.items()
        }
        self.store.set_value(WAITING, waiting)

    def restore(self, trackers: Mapping[str, NoticeTracker]) -> None:
        """After a restart: events known but not yet responded to wait again."""
        for name, tracker in trackers.items():
            known = tracker.known
            if not self.is_scheduled(name) or known is None or known.action == "cancel":
                continue
            key = tracker.response_key(name)
            if self.store.response(key) is None:
                self.waiting[name] = (key, known)

    # ----------------------------------------------------------------- cancels

    def canceled(self, tracker: str, previous: Optional[Notice], key: str) -> bool:
        """The event now shows `canceled` (a NEW `cancel` notice for its tracker). True when
        a cancel response is due: the event's own response had started."""
        return previous is not None and self._call_off(tracker, previous, key, "it was canceled")

    def gone(self, tracker: str, previous: Notice, key: str) -> None:
        """The event left the list (3 polls). Before its NotBefore, that calls it off."""
        if previous.action == "cancel" or self._wall() >= previous.epoch:
            self.waiting.pop(tracker, None)
            return
        if self._let_go(tracker, previous):
            emit(
                log,
                logging.INFO,
                "event-went-ahead",
                f"{previous.event_code} event {previous.event_id} left the list after "
                "spotwatch let it go ahead",
                event_id=previous.event_id,
            )
            return
        if self._call_off(tracker, previous, key, "it left the list before its NotBefore"):
            cancel = replace(previous, action="cancel", canceled_action=previous.action)
            self._start(f"{key}:cancel", tracker, cancel)

    def _call_off(self, tracker: str, event: Notice, key: str, why: str) -> bool:
        text = f"{event.event_code} event {event.event_id}: {why}"
        if self.waiting.pop(tracker, None) is not None:
            emit(log, logging.INFO, "event-canceled", f"{text}; its response had not started")
            return False
        started = self._started_key(tracker, event)
        if started is None:
            return False
        emit(log, logging.WARNING, "event-canceled", f"{text}: canceling its response")
        halted = f"{CANCELED}: {why}"
        for response in self.responder.running(tracker=tracker):
            self.responder.halt(response, halted)
        if not any(r.key == started for r in self.responder.running()):
            self.store.end_response(started, why=halted, unfinished=SKIPPED)
        return True

    def _let_go(self, tracker: str, event: Notice) -> bool:
        """Whether a `release` step of this event's response finished ok."""
        key = self._started_key(tracker, event)
        record = self.store.response(key) if key is not None else None
        steps = (record or {}).get("steps", [])
        return any(s.get("kind") == RELEASE and s.get("status") == OK for s in steps)

    def _started_key(self, tracker: str, event: Notice) -> Optional[str]:
        """The response record of this event's notice, if its response started."""
        responses = self.store.value("responses") or {}
        for key, record in list(responses.items()):
            notice = record.get("notice") or {}
            if record.get("tracker") == tracker and notice.get("action") == event.action:
                return str(key)
        return None
