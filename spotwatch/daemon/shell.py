"""The daemon's process shell: detection on the main thread, responses beside it.

It restores what the state directory remembers, polls on the watcher's cadence, hands what
the watcher sees to the intake (which starts responses through the one `Responder`), tells
systemd how it is doing, reloads its config on SIGHUP and stops cleanly on SIGTERM.
What a response does is response/build.py; how a notice is detected is detection/.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

from spotwatch.config.schema import Config
from spotwatch.daemon.intake import NoticeIntake
from spotwatch.daemon.signals import StopAndReload
from spotwatch.daemon.sleep import SleepWatch, boot_and_monotonic
from spotwatch.detection.identity import UNKNOWN, InstanceIdentity
from spotwatch.detection.imds import ImdsClient
from spotwatch.detection.monitors import monitors_for
from spotwatch.detection.notices import Notice, Source
from spotwatch.detection.tracker import Change, NoticeTracker, Observation
from spotwatch.detection.watcher import PollReport, Watcher, monitor_of
from spotwatch.host import logs
from spotwatch.host.notify import Notifier
from spotwatch.host.reload import Answer, ReloadReplies, reply_dir
from spotwatch.logevents import emit
from spotwatch.response.build import Providers, build_plan
from spotwatch.response.plan import Plan
from spotwatch.response.responder import Facts, Responder, ResponseListener
from spotwatch.state.ledger import HibernateLedger
from spotwatch.state.store import StateStore

log = logging.getLogger("spotwatch.daemon")

SHUTDOWN_GRACE = 80.0  # running hooks get this long to finish on SIGTERM (unit: TimeoutStopSec=90)
# A rebalance recommendation may come hours before a notice, or never one: poll faster for
# at most this long after it was issued, then at `poll_interval` again.
ELEVATED_RISK_CAP = 3600.0


@dataclass
class DaemonParts:
    """What the rest of spotwatch plugs into the daemon (all optional)."""

    providers: Callable[[Config, bool], Providers] = lambda config, dry_run: Providers()
    # Told of every response (metrics, events, the rehearsal's timeline).
    listeners: List[ResponseListener] = field(default_factory=list)
    on_poll: List[Callable[[PollReport], None]] = field(default_factory=list)
    # Told the daemon once it is prepared (telemetry reads its IMDS client's counters).
    on_start: List[Callable[[Daemon], None]] = field(default_factory=list)
    # Told each config a reload put in force (load balancer discovery starts afresh).
    on_reload: List[Callable[[Config], None]] = field(default_factory=list)


class Daemon:
    def __init__(
        self,
        config: Config,
        *,
        reload_config: Optional[Callable[[], Config]] = None,
        dry_run: bool = False,
        notifier: Optional[Notifier] = None,
        parts: Optional[DaemonParts] = None,
        clock_pair: Callable[[], Tuple[float, float]] = boot_and_monotonic,
        notice_source: Optional[Source] = None,
        reload_replies: Optional[ReloadReplies] = None,
        shutdown_grace: float = SHUTDOWN_GRACE,
    ) -> None:
        self.config = config
        self._shutdown_grace = shutdown_grace
        # Where `spotwatch reload` (the unit's ExecReload) waits for the reload's outcome.
        self.reload_replies = reload_replies or ReloadReplies(reply_dir(config.state_dir))
        self._forced_dry_run = dry_run  # --dry-run holds across reloads
        self.dry_run = dry_run or config.dry_run
        self._reload_config = reload_config
        self.notifier = notifier or Notifier()
        self.parts = parts or DaemonParts()
        self._stopping = threading.Event()
        self._hurry = threading.Event()  # a second SIGTERM: shorten the shutdown's wait
        self.client = self._make_client(config)
        self.store = StateStore(config.state_dir)
        # Shared with `spotwatch sleep-hook`: who ran the hibernate hooks, resumes, the trigger.
        self.ledger = HibernateLedger(config.state_dir)
        self.identity = InstanceIdentity(lambda: self.client)
        self.responder = Responder(
            lambda: self.config,
            self._plan,
            store=self.store,
            facts=self._facts,
            listeners=self.parts.listeners,
        )
        self.intake = NoticeIntake(
            self.responder,
            self.store,
            cadence_of=self._cadence_of,
            config=lambda: self.config,
            relabel=notice_source,
        )
        self.sleep = SleepWatch(
            lambda: self.config,
            lambda: self.client,
            self.store,
            self.ledger,
            self.responder,
            rearm=self._rearm,
            clock_pair=clock_pair,
        )
        self._signals: Optional[StopAndReload] = None  # while run() polls
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

    def _stored_trackers(self) -> Dict[str, NoticeTracker]:
        stored = self.store.value("trackers") or {}
        return {name: NoticeTracker.from_json(value) for name, value in stored.items()}

    @property
    def instance_id(self) -> Optional[str]:
        return self.identity.known

    def _learn_instance_id(self, seconds: float) -> Optional[str]:
        """The instance id, asking IMDS (at most `seconds`) while it is not known; the state
        file keeps it once learned."""
        if self.identity.known is not None:
            return self.identity.known
        learned = self.identity.learn(seconds)
        if learned is not None:
            self.store.set_instance_id(learned)
        return learned

    def _facts(self) -> Facts:
        """What a response is told as it starts: IMDS is asked for the instance id again
        if it did not answer it before (CONTRACT §4)."""
        instance_id = self._learn_instance_id(self.config.imds.timeout)
        if instance_id is None:
            emit(
                log,
                logging.WARNING,
                "instance-id-unknown",
                f"this response runs with instance id {UNKNOWN!r}: {self.identity.why}",
            )
        return Facts(instance_id or UNKNOWN, self.dry_run)

    def prepare(self) -> None:
        """Everything before the first poll: state, trackers, unfinished responses."""
        if self.identity.learn(self.config.imds.timeout * 2) is None:
            emit(
                log,
                logging.WARNING,
                "instance-id-unknown",
                f"instance id not known yet ({self.identity.why}); IMDS is asked again "
                "before a response needs it",
            )
        self.store.load(self.instance_id)
        monitors = monitors_for(self.config, self.client)
        self.watcher = Watcher(
            monitors, self, self.config.poll_interval, trackers=self._stored_trackers()
        )
        self.sleep.prepare()
        self.intake.restore(self.watcher.trackers)
        for callback in self.parts.on_start:
            callback(self)

    def _cadence_of(self, tracker: str) -> float:
        watcher = self.watcher
        monitor = None
        if watcher is not None:
            name = monitor_of(tracker)
            monitor = next((m for m in watcher.monitors if m.name == name), None)
        if monitor is not None and monitor.cadence is not None:
            return monitor.cadence
        return self.config.poll_interval

    def _plan(self, notice: Notice, config: Config) -> Plan:
        plan = build_plan(notice, config, self.parts.providers(config, self.dry_run))
        if notice.action == "hibernate":
            self.sleep.claim_hooks(notice, plan)
        return plan

    # ----------------------------------------------------------------- running

    def run(self, *, once: bool = False) -> int:
        """Poll until SIGTERM/SIGINT (or once); returns the exit status."""
        self.prepare()
        assert self.watcher is not None
        if once:
            self.watcher.poll_once()
            self.responder.wait(None)
            self.shutdown()
            return 0
        signals = self._signals = StopAndReload(self.watcher, self._hurry)
        with signals.installed():
            self.watcher.run()
            if signals.stop_signal is not None:
                name = signal.Signals(signals.stop_signal).name
                emit(log, logging.INFO, "stopping", f"{name} received, stopping")
            self.shutdown()
        return 0

    def shutdown(self) -> None:
        """Start nothing new; let running steps finish (bounded), record what did not, and
        write the state file one last time."""
        self._stopping.set()  # IMDS retries under way on other threads give up
        self.notifier.stopping()
        self.responder.shutdown(self._shutdown_grace, self._hurry)
        self.store.flush()
        self.client.close()
        if self.watcher is not None:
            self.watcher.close()

    # ----------------------------------------------------------------- WatchListener

    def on_notice(self, tracker: str, observation: Observation) -> None:
        # Remember the notice before acting on it: a crash from here on must not make a
        # restarted daemon take it for new and run finished steps again. A new notice is
        # written with its response record, by the background writer.
        assert self.watcher is not None
        known = self.watcher.trackers[tracker]
        self._save_tracker(tracker, durable=observation.change is not Change.NEW)
        if not self.intake.on_notice(tracker, observation, known.response_key(tracker)):
            known.rearm()  # its response could not start: the next poll tries again
            self._save_tracker(tracker)

    def _save_tracker(self, name: str, *, durable: bool = True) -> None:
        assert self.watcher is not None
        tracker = self.watcher.trackers.get(name)
        stored = dict(self.store.value("trackers") or {})
        if tracker is None:
            if stored.pop(name, None) is not None:
                self.store.set_value("trackers", stored)
            return
        self.store.set_tracker(name, tracker.to_json(), save=durable)

    def on_poll(self, report: PollReport) -> None:
        self.last_report = report
        assert self.watcher is not None
        if self.sleep.check_resume():
            self.watcher.poke()  # poll again now: fresh token, re-armed trackers
        self.sleep.refresh_configured()
        self._save_trackers()
        self.intake.on_poll(report, self.watcher.trackers)
        self.store.record_poll(report.wall_time, report.result, report.ok)
        if self.instance_id is None and report.ok:
            self._learn_instance_id(self.config.imds.timeout)
        for callback in self.parts.on_poll:
            callback(report)
        self._follow_risk(report)
        status = self.status_line(report)
        if not self._ready_sent:
            self.notifier.ready(status)
            self._ready_sent = True
        else:
            self.notifier.status(status)
        self.notifier.watchdog()
        if self._signals is not None and self._signals.reload_requested:
            self._signals.reload_requested = False
            self.reload()

    def _follow_risk(self, report: PollReport) -> None:
        """While a rebalance recommendation stands (and no notice has come yet), poll every
        `rebalance.poll_interval`: a notice seen 4 s sooner is 4 s more for the hooks."""
        assert self.watcher is not None
        base, fast = self.config.poll_interval, self.config.rebalance.poll_interval
        recommendation = report.known.get("rebalance")
        elevated = (
            fast < base
            and recommendation is not None
            and report.notice is None
            and time.time() - recommendation.epoch < ELEVATED_RISK_CAP
        )
        wanted = fast if elevated else base
        if wanted != self.watcher.interval:
            self.watcher.interval = wanted
            emit(
                log,
                logging.INFO,
                "poll-interval",
                f"polling every {wanted:g} s "
                + ("(rebalance recommendation: elevated risk)" if elevated else "again"),
            )

    def _save_trackers(self) -> None:
        assert self.watcher is not None
        current = {name: t.to_json() for name, t in self.watcher.trackers.items()}
        if (self.store.value("trackers") or {}) != current:
            self.store.set_value("trackers", current)

    def status_line(self, report: PollReport) -> str:
        if not report.ok:
            return f"last poll failed: {report.errors[0][:120] if report.errors else 'no answer'}"
        running = self.responder.running()
        if running:
            first = min(running, key=lambda r: r.deadline_epoch)
            return f"{first.notice.action} notice for {first.notice.time_text}; responding"
        if report.notice is not None:
            return f"{report.notice.action} notice for {report.notice.time_text}; response done"
        if report.result == "degraded":
            return "polling; degraded: instance-action does not answer (termination-time does)"
        if "rebalance" in report.known:
            return f"rebalance recommendation seen; polling every {self.watcher_interval():g} s"
        return f"polling every {self.config.poll_interval:g} s; no notice"

    def watcher_interval(self) -> float:
        return self.watcher.interval if self.watcher is not None else self.config.poll_interval

    def _rearm(self, why: str) -> None:
        """Close the handled notices: if one shows again, it is a new one."""
        if self.watcher is None:
            return
        for tracker in self.watcher.trackers.values():
            known = tracker.rearm()
            if known is not None:
                emit(
                    log,
                    logging.INFO,
                    "notice-rearmed",
                    f"{known.action} notice for {known.time_text} closed ({why})",
                    action=known.action,
                )
        self._save_trackers()

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
            self._refuse_reload(first, f"reload refused, old config kept:\n{failure}")
            return
        if fresh.state_dir != self.config.state_dir:
            why = (
                f"state_dir changed ({self.config.state_dir} -> {fresh.state_dir}); that "
                "needs a restart (systemctl restart spotwatch)"
            )
            emit(log, logging.ERROR, "reload-failed", f"reload refused: {why}")
            self._refuse_reload(why, f"reload refused, old config kept: {why}")
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
            watched = ("imds", "rebalance", "autoscaling", "scheduled_events")
            if any(getattr(fresh, name) != getattr(old, name) for name in watched):
                self.watcher.set_monitors(monitors_for(fresh, self.client), {})
        for told in self.parts.on_reload:
            told(fresh)
        message = f"config reloaded from {', '.join(fresh.sources)}"
        emit(log, logging.INFO, "reloaded", message)
        self.notifier.reloaded(f"config reloaded; polling every {fresh.poll_interval:g} s")
        self.reload_replies.answer(Answer(True, message))

    def _refuse_reload(self, first: str, whole: str) -> None:
        self.notifier.reloaded(f"reload refused ({first}); running on the previous config")
        self.reload_replies.answer(Answer(False, whole))
