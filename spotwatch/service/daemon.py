"""The daemon: detection on the main thread, each response on a thread of its own.

It restores the notice trackers and any unfinished response from the state directory,
polls on the watcher's cadence, starts a response for every new notice (the poll loop goes
on meanwhile and moves the response's deadline when the notice time moves), tells systemd
how it is doing, and reloads its config on SIGHUP.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass, field, replace
from types import FrameType
from typing import Callable, Dict, List, Optional, Tuple

from spotwatch.config.schema import Config
from spotwatch.detection.imds import ImdsClient, ImdsError
from spotwatch.detection.monitors import Monitor, RebalanceMonitor, SpotMonitor
from spotwatch.detection.notices import SOURCE_INSTANCE_ACTION, Notice
from spotwatch.detection.tracker import Change, NoticeTracker, Observation
from spotwatch.detection.watcher import PollReport, Watcher
from spotwatch.logevents import emit
from spotwatch.response.build import Providers, build_plan
from spotwatch.response.hibernate import hooks_plan, notice_key, now_notice, skip_hooks
from spotwatch.response.hooks import KILL_GRACE
from spotwatch.response.plan import NoticeClock, Plan, StepContext, StepOutcome
from spotwatch.response.runner import Runner, StepJournal
from spotwatch.service import logs
from spotwatch.service.ledger import BY_DAEMON, HibernateLedger
from spotwatch.service.notify import Notifier
from spotwatch.service.reloadreply import Answer, ReloadReplies, reply_dir
from spotwatch.service.state import StateStore, StoreJournal

log = logging.getLogger("spotwatch.daemon")

INSTANCE_ID_PATH = "meta-data/instance-id"
SHUTDOWN_GRACE = 80.0  # running hooks get this long to finish on SIGTERM (unit: TimeoutStopSec=90)
HIBERNATION_CONFIGURED_PATH = "meta-data/hibernation/configured"
CONFIGURED_REFRESH = 3600.0  # re-read hibernation/configured this rarely (never on the hot path)
RESUME_JUMP = 1.0  # CLOCK_BOOTTIME gaining this much on CLOCK_MONOTONIC between polls = a sleep
RESUME = "resume"  # the resume hooks' record in the state file


def boot_and_monotonic() -> Tuple[float, float]:
    """(CLOCK_BOOTTIME, CLOCK_MONOTONIC): the first goes on while asleep, the second stops."""
    return time.clock_gettime(time.CLOCK_BOOTTIME), time.monotonic()


@dataclass(frozen=True)
class _SignalSetup:
    """What `run()` replaced, to put back when it returns."""

    handlers: Dict[int, object]
    wakeup_fd: int


@dataclass
class ActiveResponse:
    monitor: str
    clock: NoticeClock
    ctx: StepContext
    runner: Runner
    thread: threading.Thread


@dataclass
class DaemonHooks:
    """Seams the rest of the service plugs into the daemon (all optional)."""

    providers: Callable[[Config, bool], Providers] = lambda config, dry_run: Providers()
    # Extra journals (metrics, webhook) told about every step, beside the state file.
    journals: List[Callable[[str], StepJournal]] = field(default_factory=list)
    on_poll: List[Callable[[PollReport], None]] = field(default_factory=list)
    # Told of each new notice before its response starts, so their events come first.
    on_notice: List[Callable[[str, Notice], None]] = field(default_factory=list)
    # Told the daemon once it is prepared (telemetry reads its IMDS client's counters).
    on_start: List[Callable[[Daemon], None]] = field(default_factory=list)


class FanoutJournal:
    """The state file decides what finished; everyone else is told."""

    def __init__(self, primary: StoreJournal, others: List[StepJournal]) -> None:
        self.primary = primary
        self.others = others

    def finished_status(self, step: str) -> Optional[str]:
        return self.primary.finished_status(step)

    def step_started(self, step: object, wall: float) -> None:
        for journal in [self.primary, *self.others]:
            journal.step_started(step, wall)  # type: ignore[arg-type]

    def step_ended(self, step: object, outcome: StepOutcome, started: float, ended: float) -> None:
        for journal in [self.primary, *self.others]:
            journal.step_ended(step, outcome, started, ended)  # type: ignore[arg-type]

    def response_ended(self, plan: object, outcomes: Dict[str, StepOutcome]) -> None:
        for journal in [self.primary, *self.others]:
            journal.response_ended(plan, outcomes)  # type: ignore[arg-type]


class Daemon:
    def __init__(
        self,
        config: Config,
        *,
        reload_config: Optional[Callable[[], Config]] = None,
        dry_run: bool = False,
        notifier: Optional[Notifier] = None,
        hooks: Optional[DaemonHooks] = None,
        clock_pair: Callable[[], Tuple[float, float]] = boot_and_monotonic,
        notice_source: Optional[str] = None,
        reload_replies: Optional[ReloadReplies] = None,
    ) -> None:
        self.config = config
        # Where `spotwatch reload` (the unit's ExecReload) waits for the reload's outcome.
        self.reload_replies = reload_replies or ReloadReplies(reply_dir(config.state_dir))
        # `spotwatch rehearse`: every notice handled carries this source instead of the
        # IMDS path it came from (SPOTWATCH_SOURCE=rehearsal for hooks, state, webhook).
        self.notice_source = notice_source
        self._forced_dry_run = dry_run  # --dry-run holds across reloads
        self.dry_run = dry_run or config.dry_run
        self._reload_config = reload_config
        self.notifier = notifier or Notifier()
        self.hooks = hooks or DaemonHooks()
        self._stopping = threading.Event()
        self.client = self._make_client(config)
        self.store = StateStore(config.state_dir)
        # Shared with `spotwatch sleep-hook`: who ran the hibernate hooks, resumes, the trigger.
        self.ledger = HibernateLedger(config.state_dir)
        self._clock_pair = clock_pair
        self._sleep_offset = 0.0  # CLOCK_BOOTTIME - CLOCK_MONOTONIC at the last look
        self._resumes_seen = 0  # the ledger's resume count when we last looked
        self._configured_at: Optional[float] = None  # monotonic; hibernation/configured read
        self.instance_id: Optional[str] = None
        self.responses: Dict[str, ActiveResponse] = {}
        self._lock = threading.Lock()
        self._reload_requested = False  # set by SIGHUP's handler, acted on after a poll
        self._stop_signal: Optional[int] = None  # set by SIGTERM/SIGINT's handler
        self._ready_sent = False
        self.watcher: Optional[Watcher] = None
        self.last_report: Optional[PollReport] = None

    # ----------------------------------------------------------------- set-up

    def _make_client(self, config: Config) -> ImdsClient:
        return ImdsClient(
            config.imds.endpoint,
            timeout=config.imds.timeout,
            token_ttl=config.imds.token_ttl,
            allow_imdsv1=config.imds.allow_imdsv1,
            cancel=self._stopping,
        )

    def _monitors(self) -> List[Tuple[Monitor, NoticeTracker]]:
        spot = SpotMonitor(self.client)
        pairs: List[Tuple[Monitor, NoticeTracker]] = [
            (spot, NoticeTracker.from_json(self.store.tracker(spot.name)))
        ]
        if self.config.rebalance.enabled:
            rebalance = RebalanceMonitor(self.client)
            pairs.append((rebalance, NoticeTracker.from_json(self.store.tracker(rebalance.name))))
        return pairs

    def _learn_instance_id(self, deadline: float) -> Optional[str]:
        try:
            reply = self.client.get(INSTANCE_ID_PATH, deadline=deadline)
        except ImdsError:
            return None
        text = reply.body.decode("ascii", "replace").strip()
        if reply.status == 200 and text.startswith("i-") and len(text) < 40:
            self.instance_id = text
        return self.instance_id

    def prepare(self) -> None:
        """Everything before the first poll: state, trackers, unfinished responses."""
        self._learn_instance_id(time.monotonic() + self.config.imds.timeout * 2)
        self.store.load(self.instance_id)
        self.watcher = Watcher(self._monitors(), self, self.config.poll_interval)
        self._prepare_hibernation()
        for monitor, tracker in self.watcher.monitors:
            self._resume_unfinished(monitor.name, tracker)
        for callback in self.hooks.on_start:
            callback(self)

    def _resume_unfinished(self, monitor: str, tracker: NoticeTracker) -> None:
        record = self.store.response(monitor)
        if not record or record.get("done") or tracker.known is None:
            return
        if Notice.from_json(record["notice"]).action != tracker.known.action:
            return
        emit(
            log,
            logging.WARNING,
            "response-resumed",
            f"finishing the response to {tracker.known.action} interrupted by a restart",
            action=tracker.known.action,
        )
        self._start_response(monitor, tracker.known, resume=True)

    # ----------------------------------------------------------------- running

    def run(self, *, once: bool = False) -> int:
        """Poll until SIGTERM/SIGINT (or once); returns the exit status."""
        self.prepare()
        assert self.watcher is not None
        if once:
            self.watcher.poll_once()
            self.wait_for_responses(None)
            return 0
        previous = self._install_signal_handlers(self.watcher)
        try:
            self.watcher.run()
        finally:
            self._restore_signal_handlers(previous)
            if self._stop_signal is not None:
                name = signal.Signals(self._stop_signal).name
                emit(log, logging.INFO, "stopping", f"{name} received, stopping")
            self.shutdown()
        return 0

    def _install_signal_handlers(self, watcher: Watcher) -> _SignalSetup:
        # The handlers only set flags and wake the loop (a pipe write): no locks, no
        # logging, no Event.set(), any of which can deadlock against the interrupted main
        # thread. The loop does the work at its next turn.
        def stop(signum: int, _frame: Optional[FrameType]) -> None:
            self._stop_signal = signum
            watcher.stop()

        def reload(_signum: int, _frame: Optional[FrameType]) -> None:
            self._reload_requested = True
            watcher.poke()

        handlers: Dict[int, object] = {}
        for signum, handler in (
            (signal.SIGTERM, stop),
            (signal.SIGINT, stop),
            (signal.SIGHUP, reload),
        ):
            handlers[signum] = signal.signal(signum, handler)
        # A signal that lands on another thread (hooks, ECS, webhook) still ends the sleep.
        wakeup = signal.set_wakeup_fd(watcher.waker.write_fd, warn_on_full_buffer=False)
        return _SignalSetup(handlers, wakeup)

    def _restore_signal_handlers(self, previous: _SignalSetup) -> None:
        signal.set_wakeup_fd(previous.wakeup_fd)
        for signum, handler in previous.handlers.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]

    def shutdown(self) -> None:
        """Start nothing new; let running steps finish (bounded), then say goodbye."""
        self._stopping.set()  # IMDS retries under way on other threads give up
        self.notifier.stopping()
        with self._lock:
            active = list(self.responses.values())
        for response in active:
            response.ctx.cancel.set()
        deadline = time.monotonic() + SHUTDOWN_GRACE
        for response in active:
            response.thread.join(max(0.0, deadline - time.monotonic()))
        self.store.flush()
        self.client.close()
        if self.watcher is not None:
            self.watcher.close()

    def wait_for_responses(self, timeout: Optional[float]) -> bool:
        """Block until every running response has ended; False on timeout."""
        end = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            active = list(self.responses.values())
        for response in active:
            response.thread.join(None if end is None else max(0.0, end - time.monotonic()))
            if response.thread.is_alive():
                return False
        return True

    # ----------------------------------------------------------------- WatchListener

    def on_notice(self, monitor: str, observation: Observation) -> None:
        # Remember the notice before acting on it: a crash from here on must not make a
        # restarted daemon take it for new and run finished steps again. A new notice is
        # written with its response record, by the background writer (see _start_response).
        self._save_tracker(monitor, durable=observation.change is not Change.NEW)
        notice = self._relabel(observation.notice)
        if observation.change is Change.NEW and notice is not None:
            emit(
                log,
                logging.WARNING,
                "notice",
                f"{notice.action} notice for {notice.time_text} (from {notice.source})",
                action=notice.action,
                notice_time=notice.time_text,
                source=notice.source,
            )
            for callback in self.hooks.on_notice:
                callback(monitor, notice)
            try:
                self._start_response(monitor, notice, resume=False)
            except Exception:  # never foreseen; the notice must not be lost with it
                log.exception("the response to the %s notice could not start", notice.action)
                self._forget(monitor)
        elif observation.change is Change.MOVED and notice is not None:
            emit(
                log,
                logging.WARNING,
                "notice-moved",
                f"{notice.action} notice time moved to {notice.time_text}; the deadline follows",
                action=notice.action,
                notice_time=notice.time_text,
            )
            with self._lock:
                active = self.responses.get(monitor)
            if active is not None:
                active.clock.update(notice)
                self.store.move_deadline(monitor, notice, active.clock.deadline_epoch)
        elif observation.change is Change.FORGOTTEN and observation.previous is not None:
            gone = observation.previous
            emit(
                log,
                logging.INFO,
                "notice-gone",
                f"{gone.action} notice for {gone.time_text} is gone; a new one will be handled",
                action=gone.action,
            )

    def _forget(self, name: str) -> None:
        """Un-know a notice whose response could not start, so the next poll tries again."""
        assert self.watcher is not None
        for monitor, tracker in self.watcher.monitors:
            if monitor.name == name:
                tracker.rearm()
        self._save_tracker(name)

    def _relabel(self, notice: Optional[Notice]) -> Optional[Notice]:
        if notice is None or self.notice_source is None:
            return notice
        return replace(notice, source=self.notice_source)

    def _save_tracker(self, name: str, *, durable: bool = True) -> None:
        assert self.watcher is not None
        for monitor, tracker in self.watcher.monitors:
            if monitor.name == name:
                self.store.set_tracker(name, tracker.to_json(), save=durable)

    def on_poll(self, report: PollReport) -> None:
        self.last_report = report
        assert self.watcher is not None
        self._check_resume()
        self._refresh_configured_if_stale()
        for monitor, _tracker in self.watcher.monitors:
            self._save_tracker(monitor.name)
        self.store.record_poll(report.wall_time, report.result, report.ok)
        if self.instance_id is None and report.ok:
            learned = self._learn_instance_id(time.monotonic() + self.config.imds.timeout)
            if learned is not None:
                self.store.set_instance_id(learned)
        for callback in self.hooks.on_poll:
            callback(report)
        status = self.status_line(report)
        if not self._ready_sent:
            self.notifier.ready(status)
            self._ready_sent = True
        else:
            self.notifier.status(status)
        self.notifier.watchdog()
        if self._reload_requested:
            self._reload_requested = False
            self.reload()

    def status_line(self, report: PollReport) -> str:
        if not report.ok:
            return f"last poll failed: {report.errors[0][:120] if report.errors else 'no answer'}"
        if report.notice is not None:
            # The notice keeps showing after the response has ended: say which it is.
            doing = "responding" if self._responding() else "response done"
            return f"{report.notice.action} notice for {report.notice.time_text}; {doing}"
        if report.rebalance is not None:
            return "rebalance recommendation seen; polling"
        return f"polling every {self.config.poll_interval:g} s; no notice"

    def _responding(self) -> bool:
        with self._lock:
            return any(r.thread.is_alive() for r in self.responses.values())

    # ----------------------------------------------------------------- responses

    @staticmethod
    def _notice_clock(notice: Notice, config: Config) -> NoticeClock:
        if notice.action == "hibernate":  # no warning at all: the budget is the deadline
            return NoticeClock.budget(notice, config.hibernate.budget)
        if notice.action == "rebalance":  # no deadline: each hook gets its own timeout
            groups: Dict[int, float] = {}
            for hook in config.hooks_for("rebalance"):
                groups[hook.order] = max(groups.get(hook.order, 0.0), hook.timeout)
            return NoticeClock.budget(notice, sum(groups.values()) + KILL_GRACE * len(groups))
        return NoticeClock(notice, config.deadline_margin)

    def _start_response(self, monitor: str, notice: Notice, *, resume: bool) -> None:
        with self._lock:
            previous = self.responses.get(monitor)
        if previous is not None and previous.thread.is_alive():
            # The action changed: the old plan no longer fits; let running steps end.
            previous.ctx.cancel.set()
        config = self.config
        clock = self._notice_clock(notice, config)
        plan = build_plan(notice, config, self.hooks.providers(config, self.dry_run))
        if notice.action == "hibernate":
            self._claim_hibernate_hooks(notice, plan)
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
        if resume:
            self.store.continue_response(monitor, plan.all_steps(), clock.deadline_epoch)
        else:
            # Not waited for: until a step ends (its record is written durably, and carries
            # this one), a crash loses nothing a restart would not redo anyway. The notice
            # would be new to it and every step run, as interrupted ones are.
            self.store.begin_response(
                monitor, notice, clock.deadline_epoch, plan.all_steps(), durable=False
            )
        ctx = StepContext(
            clock=clock, instance_id=self.instance_id or "unknown", dry_run=self.dry_run
        )
        journal = FanoutJournal(
            StoreJournal(self.store, monitor), [make(monitor) for make in self.hooks.journals]
        )
        runner = Runner(plan, ctx, journal)
        thread = runner.start()
        with self._lock:
            self.responses[monitor] = ActiveResponse(monitor, clock, ctx, runner, thread)

    # ----------------------------------------------------------------- hibernation

    def _hibernation_relevant(self) -> bool:
        return self.config.hibernate.trigger == "auto"

    def _prepare_hibernation(self) -> None:
        """Baselines for resume detection; a resume the sleep hook handled while we were not
        running re-arms now; `hibernation/configured` is read once here, then rarely."""
        boot, mono = self._clock_pair()
        self._sleep_offset = boot - mono
        self._resumes_seen = self.ledger.resumes()
        stored = self.store.value("resume_generation")
        if isinstance(stored, int) and self._resumes_seen > stored:
            self._rearm("a resume handled by the sleep hook while the daemon was not running")
        self.store.set_value("resume_generation", self._resumes_seen)
        if self._hibernation_relevant():
            self._refresh_configured(time.monotonic() + self.config.imds.timeout)

    def _refresh_configured_if_stale(self) -> None:
        if not self._hibernation_relevant():
            return
        if self._configured_at is None or time.monotonic() - self._configured_at > (
            CONFIGURED_REFRESH
        ):
            self._refresh_configured(time.monotonic() + self.config.imds.timeout)

    def _refresh_configured(self, deadline: float) -> None:
        """Cache `hibernation/configured` in the ledger, where the trigger reads it."""
        self._configured_at = time.monotonic()
        try:
            reply = self.client.get(HIBERNATION_CONFIGURED_PATH, deadline=deadline)
        except ImdsError as failure:
            log.debug("hibernation/configured not read: %s", failure)
            return  # keep what we knew
        if reply.status == 404:
            value: Optional[bool] = False
        elif reply.status == 200:
            value = reply.body.strip().lower() == b"true"
        else:
            return
        if value != self.ledger.configured():
            self.ledger.set_configured(value)
            emit(
                log,
                logging.INFO,
                "hibernation-configured",
                f"IMDS hibernation/configured: {str(value).lower()}",
            )

    def _claim_hibernate_hooks(self, notice: Notice, plan: Plan) -> None:
        """The sleep hook may have run the hibernate hooks already (EC2's ACPI event outran
        our poll): then they are skipped here, and only the trigger step decides."""
        try:
            standing = self.ledger.claim_hooks(notice_key(notice), BY_DAEMON)
        except OSError as failure:  # no coordination possible: run them rather than not
            emit(log, logging.ERROR, "ledger-failed", f"hibernate ledger unusable: {failure}")
            return
        if standing is not None:
            skip_hooks(plan, "the systemd-sleep hook ran the hibernate hooks")
            emit(
                log,
                logging.INFO,
                "hibernate-hooks-skipped",
                "the systemd-sleep hook already ran the hibernate hooks for this sleep",
                action=notice.action,
            )

    def _check_resume(self) -> None:
        """Between two polls: did the machine sleep? CLOCK_BOOTTIME gained on CLOCK_MONOTONIC
        (the time asleep), or the sleep hook's `post` recorded a resume."""
        boot, mono = self._clock_pair()
        offset = boot - mono
        slept = offset - self._sleep_offset
        self._sleep_offset = offset
        try:
            generation = self.ledger.resumes()
            by_hook = generation > self._resumes_seen
            run_hooks = False
            if slept > RESUME_JUMP and not by_hook:
                run_hooks = self.ledger.claim_resume(BY_DAEMON, self._resumes_seen)
            if not (run_hooks or by_hook or slept > RESUME_JUMP):
                return
            self._resumes_seen = self.ledger.resumes()
        except OSError as failure:
            emit(log, logging.ERROR, "ledger-failed", f"hibernate ledger unusable: {failure}")
            if slept <= RESUME_JUMP:
                return
            run_hooks = True
        how = f"asleep for {slept:.1f} s" if slept > RESUME_JUMP else "the sleep hook saw it"
        emit(log, logging.WARNING, "resumed", f"resumed from sleep ({how})")
        # After a resume the old token may be gone with the old host: get a fresh one.
        self.client.invalidate_token()
        self._rearm("resumed from hibernation")
        self.store.set_value("resume_generation", self._resumes_seen)
        if run_hooks:
            self._run_resume_hooks()
        if self.watcher is not None:
            self.watcher.poke()  # poll again now: fresh token, re-armed trackers

    def _rearm(self, why: str) -> None:
        """Close the handled notices: if one shows again, it is a new one."""
        assert self.watcher is not None
        for monitor, tracker in self.watcher.monitors:
            known = tracker.rearm()
            self._save_tracker(monitor.name)
            if known is not None:
                emit(
                    log,
                    logging.INFO,
                    "notice-rearmed",
                    f"{known.action} notice for {known.time_text} closed ({why})",
                    action=known.action,
                )

    def _run_resume_hooks(self) -> None:
        hooks = self.config.hooks_for(RESUME)
        if not hooks:
            return
        budget = self.config.hibernate.budget
        notice = now_notice(RESUME, SOURCE_INSTANCE_ACTION)
        # The resume hooks share hibernate's budget: their deadline is resume time + budget.
        clock = NoticeClock(notice, -budget)
        plan = hooks_plan(notice, hooks, time.monotonic() + budget)
        self.store.begin_response(RESUME, notice, clock.deadline_epoch, plan.all_steps())
        ctx = StepContext(
            clock=clock, instance_id=self.instance_id or "unknown", dry_run=self.dry_run
        )
        journal = FanoutJournal(
            StoreJournal(self.store, RESUME), [make(RESUME) for make in self.hooks.journals]
        )
        runner = Runner(plan, ctx, journal)
        thread = runner.start()
        with self._lock:
            self.responses[RESUME] = ActiveResponse(RESUME, clock, ctx, runner, thread)

    # ----------------------------------------------------------------- reload

    def reload(self) -> None:
        if self._reload_config is None:
            return
        self.notifier.reloading()
        try:
            fresh = self._reload_config()
        except Exception as failure:  # a bad new config keeps the old one
            emit(
                log,
                logging.ERROR,
                "reload-failed",
                f"reload refused, keeping the old config:\n{failure}",
            )
            first = str(failure).strip().splitlines()[0] if str(failure).strip() else "error"
            self.notifier.reloaded(f"reload refused ({first}); running on the previous config")
            self.reload_replies.answer(
                Answer(False, f"reload refused, old config kept:\n{failure}")
            )
            return
        old = self.config
        self.config = fresh
        self.dry_run = self._forced_dry_run or fresh.dry_run
        logs.configure(fresh.log.level, fresh.log.format)
        if fresh.imds != old.imds:
            self.client.close()
            self.client = self._make_client(fresh)
        if self.watcher is not None:
            self.watcher.interval = fresh.poll_interval
            if fresh.imds != old.imds or fresh.rebalance != old.rebalance:
                self.watcher.monitors = self._monitors()
        message = f"config reloaded from {', '.join(fresh.sources)}"
        emit(log, logging.INFO, "reloaded", message)
        self.notifier.reloaded(f"config reloaded; polling every {fresh.poll_interval:g} s")
        self.reload_replies.answer(Answer(True, message))
