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
from dataclasses import dataclass, field
from types import FrameType
from typing import Callable, Dict, List, Optional, Tuple

from spotwatch.config.schema import Config
from spotwatch.detection.imds import ImdsClient, ImdsError
from spotwatch.detection.monitors import Monitor, RebalanceMonitor, SpotMonitor
from spotwatch.detection.notices import Notice
from spotwatch.detection.tracker import Change, NoticeTracker, Observation
from spotwatch.detection.watcher import PollReport, Watcher
from spotwatch.logevents import emit
from spotwatch.response.build import Providers, build_plan
from spotwatch.response.plan import NoticeClock, StepContext, StepOutcome
from spotwatch.response.runner import Runner, StepJournal
from spotwatch.service import logs
from spotwatch.service.notify import Notifier
from spotwatch.service.state import StateStore, StoreJournal

log = logging.getLogger("spotwatch.daemon")

INSTANCE_ID_PATH = "meta-data/instance-id"
SHUTDOWN_GRACE = 80.0  # running hooks get this long to finish on SIGTERM (unit: TimeoutStopSec=90)


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
    on_notice: List[Callable[[str, Notice], None]] = field(default_factory=list)


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
    ) -> None:
        self.config = config
        self._forced_dry_run = dry_run  # --dry-run holds across reloads
        self.dry_run = dry_run or config.dry_run
        self._reload_config = reload_config
        self.notifier = notifier or Notifier()
        self.hooks = hooks or DaemonHooks()
        self._stopping = threading.Event()
        self.client = self._make_client(config)
        self.store = StateStore(config.state_dir)
        self.instance_id: Optional[str] = None
        self.responses: Dict[str, ActiveResponse] = {}
        self._lock = threading.Lock()
        self._reload_requested = False
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
        for monitor, tracker in self.watcher.monitors:
            self._resume_unfinished(monitor.name, tracker)

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
        previous = self._install_signal_handlers()
        try:
            self.watcher.run()
        finally:
            self._restore_signal_handlers(previous)
            self.shutdown()
        return 0

    def _install_signal_handlers(self) -> Dict[int, object]:
        previous: Dict[int, object] = {}

        def stop(signum: int, _frame: Optional[FrameType]) -> None:
            emit(log, logging.INFO, "stopping", f"{signal.Signals(signum).name} received, stopping")
            self._stopping.set()
            if self.watcher is not None:
                self.watcher.stop()

        def reload(_signum: int, _frame: Optional[FrameType]) -> None:
            self._reload_requested = True
            if self.watcher is not None:
                self.watcher.poke()

        for signum, handler in (
            (signal.SIGTERM, stop),
            (signal.SIGINT, stop),
            (signal.SIGHUP, reload),
        ):
            previous[signum] = signal.signal(signum, handler)
        return previous

    def _restore_signal_handlers(self, previous: Dict[int, object]) -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]

    def shutdown(self) -> None:
        """Start nothing new; let running steps finish (bounded), then say goodbye."""
        self.notifier.stopping()
        with self._lock:
            active = list(self.responses.values())
        for response in active:
            response.ctx.cancel.set()
        deadline = time.monotonic() + SHUTDOWN_GRACE
        for response in active:
            response.thread.join(max(0.0, deadline - time.monotonic()))
        self.client.close()

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
        # restarted daemon take it for new and run finished steps again.
        self._save_tracker(monitor)
        notice = observation.notice
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
            self._start_response(monitor, notice, resume=False)
            for callback in self.hooks.on_notice:
                callback(monitor, notice)
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

    def _save_tracker(self, name: str) -> None:
        assert self.watcher is not None
        for monitor, tracker in self.watcher.monitors:
            if monitor.name == name:
                self.store.set_tracker(name, tracker.to_json())

    def on_poll(self, report: PollReport) -> None:
        self.last_report = report
        assert self.watcher is not None
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
            return f"{report.notice.action} notice for {report.notice.time_text}; responding"
        if report.rebalance is not None:
            return "rebalance recommendation seen; polling"
        return f"polling every {self.config.poll_interval:g} s; no notice"

    # ----------------------------------------------------------------- responses

    def _start_response(self, monitor: str, notice: Notice, *, resume: bool) -> None:
        with self._lock:
            previous = self.responses.get(monitor)
        if previous is not None and previous.thread.is_alive():
            # The action changed: the old plan no longer fits; let running steps end.
            previous.ctx.cancel.set()
        config = self.config
        # Hibernate comes with no warning: its hooks are bounded by hibernate.budget instead.
        margin = 0.0 if notice.action == "hibernate" else config.deadline_margin
        clock = NoticeClock(notice, margin)
        plan = build_plan(notice, config, self.hooks.providers(config, self.dry_run))
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
            self.store.begin_response(monitor, notice, clock.deadline_epoch, plan.all_steps())
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
            self.notifier.reloaded("reload failed; running on the previous config")
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
        emit(log, logging.INFO, "reloaded", f"config reloaded from {', '.join(fresh.sources)}")
        self.notifier.reloaded(f"config reloaded; polling every {fresh.poll_interval:g} s")
