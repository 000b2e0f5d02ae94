"""Runs a `Plan`: the prelude at once, stages in order (each stage's steps in parallel) once
the prelude is done or has been waited for long enough, timed steps at their moment, then
the finale; records every step through a `StepJournal`.

Steps already finished (per the journal, i.e. before a restart) are not run again. When
the daemon shuts down (`ctx.cancel`), nothing new starts; running steps finish.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from typing import Callable, Dict, List, Optional, Protocol, Sequence, Set

from spotwatch.logevents import emit
from spotwatch.response.plan import Plan, PreludeStep, Step, StepContext, StepOutcome, TimedStep
from spotwatch.state.schema import FAILED, FINISHED, RUNNING, step_status

log = logging.getLogger("spotwatch.response")

WAIT_SLICE = 0.5  # how often a waiting timed step looks at the clock and at shutdown


class StepJournal(Protocol):
    """Where step progress goes: the state file, and through it metrics and webhooks."""

    def finished_status(self, step: str) -> Optional[str]:
        """The step's status if it finished in an earlier run of this response, else None."""

    def step_started(self, step: Step, wall: float) -> None: ...

    def step_ended(self, step: Step, outcome: StepOutcome, started: float, ended: float) -> None:
        """`started`/`ended` are wall times (Unix seconds)."""

    def response_ended(self, plan: Plan, outcomes: Dict[str, StepOutcome]) -> None: ...


class Runner:
    def __init__(
        self,
        plan: Plan,
        ctx: StepContext,
        journal: StepJournal,
        *,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.plan = plan
        self.ctx = ctx
        self.journal = journal
        self._wall = wall
        self.outcomes: Dict[str, StepOutcome] = {}
        self._running: Set[str] = set()
        self._lock = threading.Lock()
        self.done = threading.Event()

    # ----------------------------------------------------------------- running

    def run(self) -> Dict[str, StepOutcome]:
        """Run the whole plan in this thread; returns every step's outcome by name."""
        started = self.ctx.clock.now()
        prelude = [(self._start_beside(p.step), p) for p in self.plan.prelude]
        timed = [(self._start_timed(t), t.step) for t in self.plan.timed]
        for thread, part in prelude:
            self._hold_for(thread, part, started)
        for stage in self.plan.stages:
            self._run_stage(stage)
        for thread, step in [(t, p.step) for t, p in prelude] + timed:
            self._join_unless_cancelled(thread, step)
        for stage in self.plan.finale:
            self._run_stage(stage)
        if not self.ctx.cancel.is_set():
            self.journal.response_ended(self.plan, dict(self.outcomes))
        self.done.set()
        return dict(self.outcomes)

    def _run_stage(self, stage: Sequence[Step]) -> None:
        if self.ctx.cancel.is_set():
            return
        if len(stage) == 1:
            self._run_step(stage[0])
            return
        threads = [
            threading.Thread(target=self._run_step, args=(s,), name=f"step:{s.name}", daemon=True)
            for s in stage
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def _run_step(self, step: Step) -> None:
        earlier = self.journal.finished_status(step.name)
        if earlier in FINISHED:
            assert earlier is not None
            emit(log, logging.INFO, "step-already-done", f"{step.name}: {earlier} before restart")
            self._record(step, StepOutcome(step_status(earlier), "finished before a restart"))
            return
        if not step.needed(self.ctx):
            return
        with self._lock:  # one lock with _join_unless_cancelled: started or not, never both
            if self.ctx.cancel.is_set():
                return
            self._running.add(step.name)
        try:
            started = self._wall()
            self.journal.step_started(step, started)
            try:
                outcome = step.run(self._context_for(step))
            except Exception as failure:  # a bug in one step must not stop the others
                log.exception("step %s raised", step.name)
                outcome = StepOutcome(FAILED, f"internal error: {failure!r}")
            self._record(step, outcome)
            self.journal.step_ended(step, outcome, started, self._wall())
        finally:
            with self._lock:
                self._running.discard(step.name)

    def progress(self, step: str) -> Optional[str]:
        """The step's status once it ended, `running` while it runs, None before it started.
        Read once `ctx.cancel` is set, None means it never will start."""
        with self._lock:
            if step in self.outcomes:
                return self.outcomes[step].status
            return RUNNING if step in self._running else None

    def _context_for(self, step: Step) -> StepContext:
        """What a step runs with: the response's context; when the response has no
        deadline of its own, with a clock of the step's own (its budget from now)."""
        if not self.ctx.clock.per_hook:
            return self.ctx
        return replace(self.ctx, clock=self.ctx.clock.for_step(step.budget))

    def _record(self, step: Step, outcome: StepOutcome) -> None:
        with self._lock:
            self.outcomes[step.name] = outcome

    # ----------------------------------------------------------------- prelude

    def _start_beside(self, step: Step) -> threading.Thread:
        thread = threading.Thread(
            target=self._run_step, args=(step,), name=f"prelude:{step.name}", daemon=True
        )
        thread.start()
        return thread

    def _hold_for(self, thread: threading.Thread, part: PreludeStep, started: float) -> None:
        """Let the stages wait for a prelude step, but no longer than its hold (from the
        response's start) and never past the deadline: a slow AWS API must not eat the
        hooks' time."""
        clock = self.ctx.clock
        if part.hold <= 0:
            return  # nothing waits for it (Auto Scaling detach)
        while thread.is_alive() and not self.ctx.cancel.is_set():
            until = min(started + part.hold, clock.deadline)
            remaining = until - clock.now()
            if remaining <= 0:
                emit(
                    log,
                    logging.WARNING,
                    "step-not-waited-for",
                    f"{part.step.name} still running after {clock.now() - started:.1f} s; "
                    "going on without waiting for it",
                    step=part.step.name,
                )
                return
            thread.join(min(remaining, WAIT_SLICE))

    # ----------------------------------------------------------------- timed steps

    def _start_timed(self, timed: TimedStep) -> threading.Thread:
        thread = threading.Thread(
            target=self._wait_then_run, args=(timed,), name=f"timed:{timed.step.name}", daemon=True
        )
        thread.start()
        return thread

    def _wait_then_run(self, timed: TimedStep) -> None:
        clock = self.ctx.clock
        while not self.ctx.cancel.is_set():
            try:
                remaining = timed.start_at(clock) - clock.now()
            except Exception as failure:  # a bug in one step must not stop the others
                log.exception("timed step %s: cannot compute its start", timed.step.name)
                self._fail_unstarted(timed.step, f"internal error: {failure!r}")
                return
            if remaining <= 0:
                break
            # Wake on a moved notice time (the start moment moves with it) or on shutdown.
            clock.moved.wait(min(remaining, WAIT_SLICE))
            clock.moved.clear()
        self._run_step(timed.step)

    def _fail_unstarted(self, step: Step, detail: str) -> None:
        outcome = StepOutcome(FAILED, detail)
        now = self._wall()
        self.journal.step_started(step, now)
        self._record(step, outcome)
        self.journal.step_ended(step, outcome, now, now)

    def _join_unless_cancelled(self, thread: threading.Thread, step: Step) -> None:
        """Wait for a timed step; on shutdown stop waiting for one that has not started,
        but let one that is running finish (as stage steps do)."""
        while thread.is_alive():
            thread.join(WAIT_SLICE)
            if self.ctx.cancel.is_set() and thread.is_alive():
                with self._lock:
                    running = step.name in self._running
                if not running:
                    return

    def start(self) -> threading.Thread:
        """Run the plan in a background thread (the poll loop goes on meanwhile)."""
        thread = threading.Thread(target=self.run, name="response", daemon=True)
        thread.start()
        return thread


def summarize(outcomes: Dict[str, StepOutcome]) -> List[str]:
    return [f"{name}={outcome.status}" for name, outcome in outcomes.items()]
