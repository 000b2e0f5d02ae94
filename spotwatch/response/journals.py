"""Where a response's progress goes: the state file first, then everyone else.

The state file decides what finished (a restart must neither redo a finished step nor skip
an unfinished one); metrics, events and the rehearsal's timeline are told.
"""

from __future__ import annotations

from typing import Dict, List, Optional

from spotwatch.response.plan import Plan, Step, StepOutcome
from spotwatch.response.runner import StepJournal
from spotwatch.state.files import iso
from spotwatch.state.schema import RUNNING
from spotwatch.state.store import StateStore


class StoreJournal:
    """The runner's `StepJournal` for one response, backed by the state store."""

    def __init__(self, store: StateStore, key: str) -> None:
        self.store = store
        self.key = key

    def finished_status(self, step: str) -> Optional[str]:
        return self.store.finished_status(self.key, step)

    def step_started(self, step: Step, wall: float) -> None:
        # Not waited for: a crash before it lands leaves the step pending, which a restart
        # runs again just as it would an interrupted one.
        self.store.update_step(
            self.key, step.name, step.kind, durable=False, status=RUNNING, started=iso(wall)
        )

    def step_ended(self, step: Step, outcome: StepOutcome, started: float, ended: float) -> None:
        self.store.update_step(
            self.key,
            step.name,
            step.kind,
            status=outcome.status,
            ended=iso(ended),
            detail=outcome.detail,
        )

    def response_ended(self, plan: Plan, outcomes: Dict[str, StepOutcome]) -> None:
        self.store.end_response(self.key)


class FanoutJournal:
    """The state file decides what finished; everyone else is told."""

    def __init__(self, primary: StepJournal, others: List[StepJournal]) -> None:
        self.journals = [primary, *others]

    def finished_status(self, step: str) -> Optional[str]:
        return self.journals[0].finished_status(step)

    def step_started(self, step: Step, wall: float) -> None:
        for journal in self.journals:
            journal.step_started(step, wall)

    def step_ended(self, step: Step, outcome: StepOutcome, started: float, ended: float) -> None:
        for journal in self.journals:
            journal.step_ended(step, outcome, started, ended)

    def response_ended(self, plan: Plan, outcomes: Dict[str, StepOutcome]) -> None:
        for journal in self.journals:
            journal.response_ended(plan, outcomes)
