"""The model on Google Cloud and Azure: the AWS model's interpreter (§3 trackers, one end one
response, cancel, start after a stop; contract_model.py) reading clouds_signals.SIGNALS.

What differs is only how a Google notice's time is reckoned (§10, docs/gcp.md): neither value
names a moment, so the time is first seen + `gcp.notice` (preempted) or + 60 s (maintenance
event), to the second; it is kept while the value shows the same action (across a restart
too), and reckoned afresh when the value comes back after a quiet answer or changes action.
Azure's events are scheduled events as on AWS: the interpreter's `not-before` timing.
"""

from __future__ import annotations

from typing import Optional

from clouds_collect import iso
from clouds_signals import SIGNALS, CloudSettings, budget
from contract_model import Interpreter, Model, Notice, Tracker
from contract_signals import Signal
from model_trace import Shown, Trace


class CloudInterpreter(Interpreter):
    signals = SIGNALS
    settings: CloudSettings

    def _notice(self, signal: Signal, item: Shown, moment: float, tracker: str) -> Optional[Notice]:
        if signal.timing != "first-seen+budget":
            return super()._notice(signal, item, moment, tracker)
        action = signal.action_of(item)
        if action is None:
            return None
        known = self.trackers.get(tracker)
        if (
            known is not None
            and known.known is not None
            and known.absent == 0
            and known.known.action == action
        ):
            return known.known  # the same value still showing: the time it was given
        epoch = int(moment) + budget(signal.name, self.settings)
        return Notice(action, epoch, iso(epoch))

    def forgotten(self, tracker: Tracker, signal: Signal, known: Notice, moment: float) -> None:
        """docs/azure.md: an event spotwatch let go ahead (StartRequests) that then leaves the
        list went ahead, whatever its NotBefore said: no cancel."""
        response = tracker.response
        approvals = getattr(self.trace, "approvals", [])
        if response is not None and any(e == known.event_id and t <= moment for t, e in approvals):
            response.withdrawn, tracker.response = moment, None
            return
        super().forgotten(tracker, signal, known, moment)

    def start_due(self, moment: float) -> None:
        """A waiting response starts when its moment comes, not at the next usable answer: the
        daemon keeps the time it was told through a metadata outage (§3, §7). Seen at the
        next answer, it is dated back to its moment when the daemon ran then."""
        for tracker in self.trackers.values():
            response = tracker.response
            if response is None or response.started is not None or response.start_at is None:
                continue
            due = response.start_at
            if due <= moment:
                ran = due > response.first_seen and self.trace.up(due, moment)
                self.start(response, due if ran else moment)


def interpret(trace: Trace, settings: CloudSettings) -> Model:
    return CloudInterpreter(trace, settings).run()
