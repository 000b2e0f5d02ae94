"""The invariants on `status --json` and the process (§4 Shutdown, §6) for one played
sequence: steps left unfinished after SIGTERM, responses that never end, each notice's
state, the earliest deadline shown, a waiting scheduled event, tracebacks, exit status."""

from __future__ import annotations

from typing import Any, Iterable, Optional

from contract_invariants import SLACK, Checker
from contract_model import Response

STATES = frozenset({"waiting", "responding", "done"})
UNFINISHED = frozenset({"running", "pending"})


class StatusChecks:
    def __init__(self, checker: Checker) -> None:
        self.c, self.trace, self.model = checker, checker.trace, checker.model

    def run(self) -> None:
        for life in self.trace.lifetimes:
            signalled = life.signalled or 0.0
            polled = any(
                a.signal == "spot" and life.started <= a.t < signalled for a in self.trace.answers
            )  # ready (§6: the first poll was tried): from then on SIGTERM is handled
            if life.how == "sigterm" and polled and life.exit_code != 0:
                self.c.flag("sigterm-exits-0", f"exit status {life.exit_code}")
        for problem in self.trace.log_problems:
            if problem.startswith("responses still running"):
                self.c.flag("responses-end", problem)
            elif "SIGTERM" in problem:
                self.c.flag("exits-within-90s", problem)
            else:
                self.c.flag("no-traceback", problem[:300])
        for shot in self.trace.statuses:
            self.shot(shot.t, shot.after, shot.doc)

    def shot(self, moment: float, after: str, doc: Optional[Any]) -> None:
        if not isinstance(doc, dict):
            return
        steps = [s for s in doc.get("steps") or [] if isinstance(s, dict)]
        left = [s for s in steps if s.get("status") in UNFINISHED]
        if after in ("sigterm", "end") and left:
            self.c.flag(
                "steps-end-interrupted" if after == "sigterm" else "responses-end",
                f"status after {after} at {self.c.at(moment)}: "
                + ", ".join(f"{s.get('name')}={s.get('status')}" for s in left),
            )
        notices = [n for n in doc.get("notices") or [] if isinstance(n, dict)]
        stuck = [n for n in notices if n.get("state") == "responding"]
        if after == "end" and stuck:  # every response has ended by then (the driver waited)
            self.c.flag(
                "responses-end",
                f"status at the end: {stuck[0].get('action')} notice for {stuck[0].get('time')} "
                "still responding, with nothing left running",
            )
        for entry in notices:
            if entry.get("state") not in STATES:
                self.c.flag("status-notice-state", f"notices entry without a state: {entry}")
                break
        active = [n for n in notices if n.get("state") == "responding"]
        chosen = doc.get("notice") or {}
        earliest = min(active, key=lambda n: str(n.get("deadline")), default=None)
        if earliest is not None and chosen.get("deadline") != earliest.get("deadline"):
            self.c.flag(
                "status-notice-earliest",
                f"status at {self.c.at(moment)}: notice {chosen.get('action')} "
                f"(deadline {chosen.get('deadline')}), not the earliest {earliest.get('deadline')}",
            )
        for response in self.waiting_at(moment):
            listed = [n for n in notices if n.get("event_id") == response.notice.event_id]
            starts = [n.get("starts") for n in listed if n.get("state") == "waiting"]
            if not starts:
                self.c.flag(
                    "status-shows-waiting",
                    f"status at {self.c.at(moment)}: {response.key} waits to start at "
                    f"{self.c.at(response.start_at)}, not shown waiting",
                )

    def waiting_at(self, moment: float) -> Iterable[Response]:
        poll = self.c.settings.poll
        for response in self.model.of_waiting():
            due = response.start_at
            if (
                due is not None
                and response.first_seen < moment - 4 * poll - SLACK
                and due > moment + SLACK
                and (response.halted is None or response.halted > moment)
                and self.trace.up(response.first_seen, moment)
            ):
                yield response
