"""The model: from what IMDS told the daemon's polls and logind announced (and when the
daemon ran, on which boot) to the responses the contract promises. Pure Python, no I/O;
written from CONTRACT.md §3, §4, §7 and §8, not from spotwatch's code.

`interpret(trace)` replays the answers in time order through one tracker per notice (§3)
and gives every `Response` (one per notice; a `cancel` per canceled scheduled event; a
`start` per first boot after an ending response; a `shutdown` per announcement no end
response answers) and every `End` (the first response of an end and those that joined
it). What a response must do is decided in the contract_*.py invariants; this module says
when responses started, joined, were canceled or superseded, and which moments are
uncertain enough that the contract promises only bounds.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Dict, List, Optional, Tuple

from contract_signals import (
    END_ACTIONS,
    ENDS_THE_BOOT,
    SHUTDOWN_WAITS_FOR,
    SIGNALS,
    Settings,
    Signal,
)

__all__ = ["End", "Model", "Notice", "Response", "Shutdown", "interpret"]
from contract_responses import End, Model, Notice, Response, Shutdown, Tracker
from model_trace import Announcement, Answer, Lifetime, Shown, Trace

FORGET_AFTER = 3  # §3: absent for 3 consecutive successful polls
BRIEF_BOOT = 6.0  # a boot the daemon ran on no longer than this may not have run its start
LOCK_READY = 1.5  # seconds from the daemon's start by which it surely holds logind's lock


class Interpreter:
    signals: Dict[str, Signal] = SIGNALS  # another cloud's model gives its own

    def __init__(self, trace: Trace, settings: Settings) -> None:
        self.trace = trace
        self.settings = settings
        self.model = Model(settings)
        self.trackers: Dict[str, Tracker] = {}
        self.boot = -1
        self.counts: Dict[str, int] = {}

    # ------------------------------------------------------------------ the replay

    def run(self) -> Model:
        items: List[Tuple[float, int, object]] = [(a.t, 1, a) for a in self.trace.answers]
        items += [(life.started, 0, life) for life in self.trace.lifetimes]
        items += [(a.t, 1, a) for a in self.trace.announcements]
        for moment, _, item in sorted(items, key=lambda i: (i[0], i[1])):
            self.start_unpolled(moment)
            if isinstance(item, Answer):
                self.answer(item)
            elif isinstance(item, Lifetime):
                self.daemon_started(item.started, item.boot)
            elif isinstance(item, Announcement):
                self.announced(item.t) if item.active else self.called_off(item.t)
        self.start_unpolled(self.trace.ended)
        return self.model

    def daemon_started(self, moment: float, boot: int) -> None:
        if boot == self.boot:
            return
        previous = [
            r
            for r in self.model.responses
            if r.boot == self.boot
            and r.action in ENDS_THE_BOOT
            and r.started is not None
            and (r.end is None or r.end.live_at(r.started))
            and r.halt_why != "canceled"
        ]
        owed = [r for r in self.model.of("start") if r.boot == self.boot]
        brief = self.up_for(self.boot) < BRIEF_BOOT
        self.boot, self.trackers = boot, {}  # a new boot: the earlier boot's notices are gone
        if previous and boot > 0:
            # A shutdown that may have been answered by waiting instead names no start.
            certain = [r for r in previous if not (r.uncertain and r.action == "shutdown")]
            latest = max(certain or previous, key=lambda r: r.first_seen)
            notice = Notice("start", *latest.latest())  # the earlier notice's time, as it stood
            start = self._start_response(notice, moment)
            start.also_times = [r.latest()[1] for r in certain or previous]
            if all(r.uncertain and r.action == "shutdown" for r in previous):
                start.uncertain = f"the response it follows is uncertain ({latest.uncertain})"
        elif owed and brief:  # that boot's start may not have run: the next boot may run it
            self._start_response(owed[0].notice, moment).uncertain = "an earlier start was cut"

    def _start_response(self, notice: Notice, moment: float) -> Response:
        start = self._new("start", "start", SIGNALS["spot"], notice, moment)
        start.started, start.sightings, start.source = moment, 2, "instance-start"
        return start

    def up_for(self, boot: int) -> float:
        """How long the daemon ran (until told to stop) on `boot`."""
        return sum(
            (life.signalled or life.ended or self.trace.ended) - life.started
            for life in self.trace.lifetimes
            if life.boot == boot
        )

    def answer(self, answer: Answer) -> None:
        signal = self.signals[answer.signal]
        shown: Dict[str, Optional[Notice]] = {}
        if signal.per_event:
            for item in answer.shown:
                name = f"{signal.name}/{item.event_id}"
                shown[name] = self._notice(signal, item, answer.t, name)
                if item.state == "completed":
                    self.trackers.setdefault(name, Tracker()).completed_seen = True
            for name in self.trackers:
                if name.startswith(signal.name + "/"):
                    shown.setdefault(name, None)
        else:
            item = answer.shown[0] if answer.shown else None
            shown[signal.name] = self._notice(signal, item, answer.t, signal.name) if item else None
        for name, notice in shown.items():
            known = self.trackers.get(name)
            blind = answer.speaks_for is not None and notice is None and known is not None
            if blind and known.known is not None and known.known.action not in answer.speaks_for:
                continue  # §3: this answer says nothing about a notice of that action
            self.observe(name, signal, notice, answer.t)
        self.start_due(answer.t)

    def _notice(self, signal: Signal, item: Shown, moment: float, tracker: str) -> Optional[Notice]:
        action = signal.action_of(item)
        if action is None:
            return None
        epoch, text = item.epoch, item.time_text
        if signal.timing == "first-seen+budget":
            known = self.trackers.get(tracker)
            if known is not None and known.known is not None:
                return known.known  # its time is reckoned once, from when it was first seen
            epoch = int(moment) + self.settings.asg_budget
            text = ""
        code = item.what if signal.per_event else ""
        return Notice(action, epoch, text, item.event_id, code, item.source)

    # ------------------------------------------------------------------ §3 trackers

    def observe(self, name: str, signal: Signal, notice: Optional[Notice], moment: float) -> None:
        tracker = self.trackers.setdefault(name, Tracker())
        known = tracker.known
        if notice is None:
            if known is None:
                return
            tracker.absent += 1
            if tracker.absent >= FORGET_AFTER:
                tracker.known, tracker.absent = None, 0
                self.forgotten(tracker, signal, known, moment)
            return
        tracker.absent = 0
        if known is None or known.action != notice.action:
            tracker.known = notice
            self.new(name, tracker, signal, notice, known, moment)
        elif notice.epoch != known.epoch:
            tracker.known = notice
            waiting = tracker.response
            if signal.waits and waiting is not None and waiting.started is None:
                waiting.start_at = notice.epoch - self.settings.lead  # NotBefore moved
        response = tracker.response
        if response is not None and response.action == notice.action:
            response.sightings += 1
            response.shown.append((moment, notice.epoch, notice.text))

    def new(
        self,
        name: str,
        tracker: Tracker,
        signal: Signal,
        notice: Notice,
        previous: Optional[Notice],
        moment: float,
    ) -> None:
        old = tracker.response
        if notice.action == "cancel":
            if old is not None and previous is not None:
                self.cancel(old, moment)
            tracker.response = None
            return
        if old is not None and old.halted is None:
            old.halted, old.halt_why = moment, "superseded"
        start_at = moment
        if signal.waits:
            start_at = max(moment, notice.epoch - self.settings.lead)
        tracker.response = self._new(name, notice.action, signal, notice, moment, start_at)

    def forgotten(self, tracker: Tracker, signal: Signal, known: Notice, moment: float) -> None:
        response = tracker.response
        if response is None:
            return
        response.withdrawn = moment
        if signal.cancelable and abs(moment - known.epoch) < 4 * self.settings.poll + 0.5:
            response.uncertain = "gone about its NotBefore: canceled or not, timing decides"
        if signal.cancelable and known.action != "cancel" and moment < known.epoch:
            if tracker.completed_seen:  # `completed` before NotBefore: the contract is silent
                response.uncertain = "completed before its NotBefore"
            self.cancel(response, moment)
        tracker.response = None

    def _new(
        self,
        tracker: str,
        action: str,
        signal: Signal,
        notice: Notice,
        moment: float,
        start_at: Optional[float] = None,
    ) -> Response:
        count = self.counts[tracker] = self.counts.get(tracker, 0) + 1
        response = Response(
            f"{tracker}#{count}", tracker, signal, action, self.boot, notice, moment, start_at
        )
        self.model.responses.append(response)
        return response

    # ------------------------------------------------------------------ starting, joining

    def start_unpolled(self, moment: float) -> None:
        """A response waiting for its moment starts by the daemon's own clock, polls or not
        (IMDS may be down then): one due a poll or more before `moment` has started."""
        late = 2 * self.settings.poll + 0.25
        for tracker in self.trackers.values():
            response = tracker.response
            due = response.start_at if response is not None else None
            if response is None or response.started is not None or due is None:
                continue
            if due + late < moment and self.trace.up(due, due):
                self.start(response, due)

    def start_due(self, moment: float) -> None:
        for tracker in self.trackers.values():
            response = tracker.response
            if response is None or response.started is not None or response.start_at is None:
                continue
            if response.start_at <= moment:
                self.start(response, moment)

    def start(self, response: Response, moment: float) -> None:
        response.started = moment
        first = self.end_to_join(response, moment)
        if first is None:
            end = End(response, response.action, [response], ever=[response])
            self.model.ends.append(end)
            response.end = end
            return
        response.end, response.joined = first, moment
        first.members.append(response)
        first.ever.append(response)
        if first.root.halt_why == "superseded":  # the contract does not say what that joins
            response.uncertain = first.uncertain = "the response it joins was superseded"
        if first.root.uncertain:
            response.uncertain = f"the response it joins is uncertain ({first.root.uncertain})"

    # ------------------------------------------------------------------ §8 shutdown

    def announced(self, moment: float) -> None:
        """PrepareForShutdown(true): heard only by a daemon holding the lock (up a moment
        already); one under way on this boot is not answered twice."""
        if not self.trace.up(moment, moment) or any(
            s.boot == self.boot and s.called_off is None for s in self.model.shutdowns
        ):
            return
        shutdown = Shutdown(moment, self.boot)
        self.model.shutdowns.append(shutdown)
        if not self.lock_held(moment):  # logind does not wait for it; did it listen yet?
            shutdown.uncertain = "the daemon held no lock when the shutdown was announced"
        slack = 2 * self.settings.poll + 0.5  # a poll in flight, a response being set up
        ends = [
            e
            for e in self.model.ends
            if e.root.boot == self.boot
            and e.action in SHUTDOWN_WAITS_FOR
            and e.began <= moment
            and e.live_at(moment)
        ]
        racing = [
            r
            for r in self.model.responses
            if r.boot == self.boot
            and r.action in SHUTDOWN_WAITS_FOR
            and (
                abs((r.started or r.start_at or 0.0) - moment) < slack
                or abs((r.halted or 0.0) - moment) < slack
                or r.uncertain
            )
        ]
        if racing:  # which answer it gets is a matter of which poll came first
            shutdown.uncertain = shutdown.uncertain or "an end response began or halted near it"
        if ends and not racing:
            shutdown.waits_for = ends[0]
            return
        budget = self.settings.shutdown_budget
        epoch = float(int(moment + budget))  # the announcement + budget, to the second
        text = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
        notice = Notice("shutdown", epoch, text)
        response = self._new("shutdown", "shutdown", SIGNALS["shutdown"], notice, moment)
        response.sightings = 2  # no poll confirms it: the announcement is the whole signal
        response.uncertain = shutdown.uncertain
        shutdown.response = response
        self.start(response, moment)

    def called_off(self, moment: float) -> None:
        """PrepareForShutdown(false): the shutdown's response starts no further step and,
        like a canceled one, ended nothing (§8)."""
        for shutdown in self.model.shutdowns:
            if shutdown.boot != self.boot or shutdown.called_off is not None:
                continue
            shutdown.called_off = moment
            response = shutdown.response
            if not self.lock_held(moment):  # let go already (it ended), or a daemon starting
                shutdown.uncertain = "called off after the lock was let go: §8 is silent"
                if response is not None and response.end is not None:
                    response.uncertain = response.end.uncertain = shutdown.uncertain
                continue
            if response is not None and response.halted is None:
                response.halted, response.halt_why = moment, "canceled"
                self._cancel_end(response, moment)

    def lock_held(self, moment: float) -> bool:
        return any(
            lock.taken <= moment and (lock.released is None or lock.released > moment)
            for lock in self.trace.locks
        )

    def shutdown_end(self, response: Response, moment: float) -> Optional[End]:
        """A live `shutdown` response on this boot (a notice of an end coming during it)."""
        for shutdown in self.model.shutdowns:
            own = shutdown.response
            if (
                own is not None
                and own.boot == response.boot
                and own.end is not None
                and own.end.live_at(moment)
                and response.action in SHUTDOWN_WAITS_FOR
            ):
                return own.end
        return None

    def end_to_join(self, response: Response, moment: float) -> Optional[End]:
        """§7: a second signal of the same end joins the first's response (one that already
        ended on this boot included); a canceled response ended nothing."""
        during = self.shutdown_end(response, moment)
        if during is not None:  # §8 is silent on a notice during the shutdown's own response
            response.uncertain = during.uncertain = "a notice came during a shutdown's response"
            return during
        if response.action not in END_ACTIONS:
            return None
        for end in self.model.ends:
            root = end.root
            if (
                root.boot == response.boot
                and end.action == response.action
                and all(m.tracker != response.tracker or m.halted for m in end.members)
                and end.live_at(moment)
            ):
                return end
        return None

    # ------------------------------------------------------------------ §7 cancel

    def cancel(self, response: Response, moment: float) -> None:
        slack = 4 * self.settings.poll + 0.5
        start_at = response.start_at if response.start_at is not None else moment
        if response.started is None:
            response.halted, response.halt_why = moment, "called off before it started"
            if moment < start_at - slack:
                return
            response.uncertain = "called off as its response was due to start"
        else:
            response.halted, response.halt_why = moment, "canceled"
        self._cancel_end(response, moment)
        epoch, text = response.latest()
        notice = replace(response.notice, epoch=epoch, text=text)
        cancel = self._new("cancel:" + response.tracker, "cancel", response.signal, notice, moment)
        cancel.started, cancel.sightings = moment, 2
        cancel.canceled_action, cancel.undo_of = response.action, response
        cancel.uncertain = response.uncertain
        if abs(moment - start_at) < slack:
            cancel.uncertain = "canceled as its response was due to start"

    def _cancel_end(self, response: Response, moment: float) -> None:
        """A canceled response ended nothing (§7): what had joined it goes on alone."""
        end = response.end
        if end is not None and end.root is response:
            heirs = [m for m in end.members if m is not response and m.halted is None]
            if heirs:
                end.transferred = moment
                end.root = heirs[0]
                end.members.remove(response)
            else:
                end.canceled = moment
        elif end is not None:
            end.members.remove(response)


def interpret(trace: Trace, settings: Settings) -> Model:
    return Interpreter(trace, settings).run()
