"""The one place a response starts: for a notice, a resumed response after a restart, the
resume hooks, the sleep hook's hooks, a rehearsal.

It holds the registry of running responses, keyed by response (one per notice: the
tracker's key and the notice's generation in it), under a lock, and drops each when it
ends. Every response gets its deadline from the one rule (response/deadline.py), its plan
from the planner (response/build.py), a record of its own in the state file, and the
listeners (telemetry, the rehearsal's timeline) hear "response started" with the plan and
the deadline before its first step, then every step through their journals.

Signals that mean the same end of the instance (response/ends.py) make one response: the
second joins the first (`_joining`, response/joins.py), the join is recorded so a restart
keeps it, and the earliest of their notice times governs all of them (`_govern`), however
any of them moves.

A notice whose action changes is a new notice (same tracker, next generation): the old
response starts no further step (its running hooks finish), its unstarted steps are
recorded `skipped`, and the new one runs every step of its own plan.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Protocol, Sequence

from spotwatch.config.schema import Config
from spotwatch.detection.notices import Notice
from spotwatch.logevents import emit
from spotwatch.response.deadline import KILL_GRACE, NoticeClock, deadline_clock
from spotwatch.response.ends import joined_plan, without_detach
from spotwatch.response.joins import Joined, Joins
from spotwatch.response.journals import FanoutJournal, StoreJournal
from spotwatch.response.plan import Plan, StepContext, always
from spotwatch.response.runner import Runner, StepJournal
from spotwatch.state.schema import INTERRUPTED, SKIPPED
from spotwatch.state.store import StateStore

log = logging.getLogger("spotwatch.response")

Planner = Callable[[Notice, Config], Plan]
SHUTDOWN_SLICE = 0.2  # how often a shutdown looks at a second SIGTERM


@dataclass
class Response:
    """One notice's response, while it runs."""

    key: str  # its record in the state file
    tracker: str  # the tracker whose notice it answers
    plan: Plan
    ctx: StepContext
    runner: Runner
    resumed: bool = False
    thread: Optional[threading.Thread] = None
    # Why it was told to start nothing new, and what its unstarted steps are then.
    halted: Optional[str] = None
    unfinished: str = SKIPPED
    ended: threading.Event = field(default_factory=threading.Event)

    @property
    def clock(self) -> NoticeClock:
        return self.ctx.clock

    @property
    def notice(self) -> Notice:
        return self.ctx.clock.notice

    @property
    def deadline_epoch(self) -> float:
        return self.ctx.clock.deadline_epoch

    def progress(self, step: str) -> Optional[str]:
        return self.runner.progress(step)


class ResponseListener(Protocol):
    def response_started(self, response: Response) -> None:
        """Before its first step, on the thread that started it: return quickly."""

    def journal(self, response: Response) -> Optional[StepJournal]:
        """Where this listener wants to hear of the response's steps (None: nowhere)."""


@dataclass
class Facts:
    """What steps need to know about the instance, as known when a response starts."""

    instance_id: str = "unknown"
    dry_run: bool = False
    cloud: str = ""  # SPOTWATCH_CLOUD: the cloud the daemon runs on


class NullJournal:
    """For responses with no record of their own (the sleep hook's: the ledger is its record)."""

    def finished_status(self, step: str) -> Optional[str]:
        return None

    def step_started(self, step: object, wall: float) -> None:
        pass

    def step_ended(self, step: object, outcome: object, started: float, ended: float) -> None:
        pass

    def response_ended(self, plan: object, outcomes: object) -> None:
        pass


class Responder:
    def __init__(
        self,
        config: Callable[[], Config],
        planner: Planner,
        *,
        store: Optional[StateStore] = None,
        facts: Callable[[], Facts] = Facts,
        listeners: Sequence[ResponseListener] = (),
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._planner = planner
        self.store = store
        self._facts = facts
        self.listeners: List[ResponseListener] = list(listeners)
        self._clock = clock
        self._wall = wall
        self._lock = threading.Lock()
        self._running: Dict[str, Response] = {}
        self.joins = Joins(store, self.running) if store is not None else None

    # ----------------------------------------------------------------- starting

    def start(
        self,
        key: str,
        tracker: str,
        notice: Notice,
        *,
        resume: bool = False,
        confirmed: Callable[[], bool] = always,
        background: bool = True,
    ) -> Response:
        """Start (or, after a restart, `resume`) the response to `notice`. `background`:
        run it on a thread of its own (the daemon); else run it here (the sleep hook)."""
        for older in self.running(tracker=tracker):
            if older.key != key:
                self.halt(older, f"superseded by a {notice.action} notice")
        config = self._config()
        first = self._joining(key, tracker, notice)
        plan = self._planner(notice, config)
        if self.joins is not None and self.joins.group_terminating():
            plan = without_detach(plan)  # whichever end: the group is replacing it already
        timing = self.joins.governing(key, notice) if self.joins is not None else notice
        clock = deadline_clock(
            timing, config, budget=plan.own_budget(), clock=self._clock, wall=self._wall
        )
        if first is not None and self.joins is not None:
            plan = joined_plan(plan, self.joins.view(first.key), first.steps, first.notice)
        for warning in plan.warnings:
            emit(log, logging.WARNING, "plan-warning", warning, action=notice.action)
        if clock.time_left() <= 0 and notice.action != "hibernate":
            emit(
                log,
                logging.WARNING,
                "deadline-passed",
                f"the deadline passed {-clock.time_left():.1f} s ago; running what can still run",
                action=notice.action,
            )
        steps = [(step.name, step.kind) for step in plan.all_steps() if step.listed]
        if self.store is not None:
            if resume:
                self.store.continue_response(key, steps, clock.deadline_epoch)
            else:
                # Not waited for: until a step ends (its record is written durably, and
                # carries this one), a crash loses nothing a restart would not redo anyway.
                self.store.begin_response(
                    key, tracker, notice, clock.deadline_epoch, steps, durable=False
                )
        facts = self._facts()
        ctx = StepContext(
            clock=clock,
            instance_id=facts.instance_id,
            dry_run=facts.dry_run,
            confirmed=confirmed,
            response=key,
            cloud=facts.cloud,
        )
        response = Response(key, tracker, plan, ctx, Runner(plan, ctx, NullJournal()), resume)
        own: StepJournal = StoreJournal(self.store, key) if self.store else NullJournal()
        others = [j for j in (lis.journal(response) for lis in self.listeners) if j is not None]
        response.runner.journal = FanoutJournal(own, others)
        with self._lock:
            self._running[key] = response
        if first is not None:
            self._govern(key, notice)  # the earlier deadline governs the first too
        for listener in self.listeners:
            listener.response_started(response)
        if background:
            response.thread = threading.Thread(
                target=self._run, args=(response,), name=f"response:{key}", daemon=True
            )
            response.thread.start()
        else:
            self._run(response)
        return response

    def _joining(self, key: str, tracker: str, notice: Notice) -> Optional[Joined]:
        """The response of the same end (another tracker's) that this one joins, if any."""
        found = self.joins.find(key, tracker, notice) if self.joins is not None else None
        if found is not None:
            emit(
                log,
                logging.WARNING,
                "response-joined",
                f"the {notice.action} notice from {notice.source} joins the response "
                f"{found.key}: one end, one response",
                action=notice.action,
                source=notice.source,
            )
        return found

    def ended_of_same_end(self, tracker: str, notice: Notice) -> Optional[str]:
        """The record of a response that ran its course on this boot (not halted) and meant
        the same end as `notice` (of another tracker), if any."""
        return self.joins.ended_of_same_end(tracker, notice) if self.joins is not None else None

    def _run(self, response: Response) -> None:
        try:
            response.runner.run()
        except Exception:  # never foreseen: the registry must still let go of it
            log.exception("the response %s ended with an internal error", response.key)
        finally:
            with self._lock:
                self._running.pop(response.key, None)
            if response.halted is not None and self.store is not None:
                self.store.end_response(
                    response.key, why=response.halted, unfinished=response.unfinished
                )
            response.ended.set()

    # ----------------------------------------------------------------- running ones

    def running(self, *, tracker: Optional[str] = None) -> List[Response]:
        with self._lock:
            found = list(self._running.values())
        return [r for r in found if tracker is None or r.tracker == tracker]

    def move(self, key: str, notice: Notice) -> None:
        """The notice's time moved: its response's deadline follows, and its record says so
        (also once the response has ended: `status` shows the notice as it stands). The
        earliest time among the notices of one end governs all of their responses."""
        if self.store is not None:
            self.store.move_deadline(key, notice, self._deadline_of(key, notice))
        self._govern(key, notice)

    def _deadline_of(self, key: str, notice: Notice) -> float:
        with self._lock:
            response = self._running.get(key)
        if response is not None:
            return response.deadline_epoch
        timing = self.joins.governing(key, notice) if self.joins is not None else notice
        return deadline_clock(timing, self._config()).deadline_epoch

    def _govern(self, key: str, notice: Notice) -> None:
        """Every running response of `key`'s end follows the earliest of its notices."""
        for member in self.joins.members(key) if self.joins is not None else [key]:
            with self._lock:
                response = self._running.get(member)
            if response is None:
                continue
            own = notice if member == key else self._own_notice(member, response)
            response.clock.update(self.joins.governing(member, own) if self.joins else own)
            if self.store is not None:
                self.store.move_deadline(member, own, response.deadline_epoch)

    def _own_notice(self, key: str, response: Response) -> Notice:
        """A response's own notice, as recorded (its clock may carry another's time)."""
        record = (self.store.response(key) if self.store is not None else None) or {}
        try:
            return Notice.from_json(record["notice"])
        except (KeyError, TypeError, ValueError):
            return response.notice

    def halt(self, response: Response, why: str, *, unfinished: str = SKIPPED) -> None:
        """Start no further step of `response`; what runs finishes."""
        if response.halted is None:
            response.halted, response.unfinished = why, unfinished
            emit(
                log,
                logging.WARNING,
                "response-halted",
                f"the {response.notice.action} response starts no further step: {why}",
                action=response.notice.action,
            )
        response.ctx.cancel.set()

    def wait(self, timeout: Optional[float]) -> bool:
        """Block until every running response has ended; False on timeout."""
        end = None if timeout is None else self._clock() + timeout
        for response in self.running():
            left = None if end is None else max(0.0, end - self._clock())
            if not response.ended.wait(left):
                return False
        return True

    def shutdown(self, grace: float, hurry: Optional[threading.Event] = None) -> None:
        """Start nothing new; give running steps `grace` seconds (less once `hurry` is set),
        then end what still runs (hooks: SIGTERM, SIGKILL 5 s later) and abandon what does
        not end by then (an AWS call in flight). Unfinished steps are recorded
        `interrupted`: a restarted daemon takes them up again while the notice still shows;
        those of a response halted before the shutdown (superseded, canceled) are `skipped`
        and it is done: nothing takes it up again."""
        for response in self.running():
            self.halt(response, "the daemon is stopping", unfinished=INTERRUPTED)
        end = self._clock() + grace
        while self.running() and self._clock() < end:
            if hurry is not None and hurry.is_set():
                break
            self.wait(min(SHUTDOWN_SLICE, max(0.0, end - self._clock())))
        left = self.running()
        if not left:
            return
        emit(
            log,
            logging.WARNING,
            "shutdown-grace-over",
            f"{len(left)} response(s) still running: ending their steps now",
        )
        for response in left:
            response.ctx.abort.set()
        self.wait(KILL_GRACE + SHUTDOWN_SLICE)
        for response in self.running():
            emit(
                log,
                logging.WARNING,
                "steps-abandoned",
                f"the {response.notice.action} response {response.key} still has steps "
                "running (an AWS call in flight): recorded interrupted, not waited for",
                action=response.notice.action,
            )
            if self.store is not None:  # one halted before (superseded, canceled) is over
                self.store.end_response(
                    response.key, why=response.halted, unfinished=response.unfinished
                )
