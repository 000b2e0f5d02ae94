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

from spotwatch.clouds.cloud import Cloud
from spotwatch.clouds.registry import Settled, settle
from spotwatch.config.schema import Config
from spotwatch.daemon.intake import NoticeIntake
from spotwatch.daemon.oncloud import OnCloud
from spotwatch.daemon.pollview import status_line, wanted_interval
from spotwatch.daemon.signals import StopAndReload
from spotwatch.daemon.sleep import SleepWatch, boot_and_monotonic
from spotwatch.detection.identity import UNKNOWN, InstanceIdentity
from spotwatch.detection.metadata import MetadataClient
from spotwatch.detection.monitors import Monitor
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
# The exit comes within this long of the first SIGTERM, whatever is left (CONTRACT §4); the
# slack is for what comes after the last bounded wait (the state write, the interpreter's exit).
EXIT_WITHIN = 90.0
EXIT_SLACK = 1.0
ONCE_SLICE = 0.2  # `run --once`: how often the wait for its responses looks at a SIGTERM


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
    # Told the daemon is stopping, once its responses are done or abandoned: the seconds
    # left before it must exit (telemetry gives undelivered events what it may of them; the
    # shutdown lock is let go).
    on_stop: List[Callable[[float], None]] = field(default_factory=list)


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
        settle: Callable[[Config], Settled] = settle,
    ) -> None:
        # The cloud: the one the config names, else the one the firmware names; what it
        # lacks is off in the config the daemon runs on (clouds/registry.py).
        self.on = OnCloud(settle, config)
        config = self.config = self.on.config
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
        self.identity = InstanceIdentity(lambda: self.client, lambda: self.on.cloud.instance_id)
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
            is_scheduled=self._is_scheduled,
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

    @property
    def cloud(self) -> Cloud:
        return self.on.cloud

    def _make_client(self, config: Config) -> MetadataClient:
        return self.cloud.client(config, cancel=self._stopping)

    def _stored_trackers(self) -> Dict[str, NoticeTracker]:
        stored = self.store.value("trackers") or {}
        return {name: NoticeTracker.from_json(value) for name, value in stored.items()}

    @property
    def instance_id(self) -> Optional[str]:
        return self.identity.known

    def _learn_instance_id(self, seconds: float) -> Optional[str]:
        """The instance id, asking the metadata service (at most `seconds`) while it is not
        known; the state file keeps it once learned."""
        if self.identity.known is not None:
            return self.identity.known
        learned = self.identity.learn(seconds)
        if learned is not None:
            self.store.set_instance_id(learned)
        return learned

    def _facts(self) -> Facts:
        """What a response is told as it starts: the metadata service is asked for the
        instance id again if it did not answer it before (CONTRACT §4)."""
        instance_id = self._learn_instance_id(self.client.timeout)
        if instance_id is None:
            emit(
                log,
                logging.WARNING,
                "instance-id-unknown",
                f"this response runs with instance id {UNKNOWN!r}: {self.identity.why}",
            )
        return Facts(instance_id or UNKNOWN, self.dry_run, self.cloud.name)

    def prepare(self) -> None:
        """Everything before the first poll: state, trackers, unfinished responses."""
        self.on.say_where()
        if self.identity.learn(self.client.timeout * 2) is None:
            emit(
                log,
                logging.WARNING,
                "instance-id-unknown",
                f"instance id not known yet ({self.identity.why}); the metadata service is "
                "asked again before a response needs it",
            )
        self.store.load(self.instance_id)
        monitors = self.cloud.monitors(self.config, self.client)
        self.watcher = Watcher(
            monitors, self, self.config.poll_interval, trackers=self._stored_trackers()
        )
        self.sleep.prepare()
        self.intake.restore(self.watcher.trackers)
        for callback in self.parts.on_start:
            callback(self)

    def _monitor_of(self, tracker: str) -> Optional[Monitor]:
        if self.watcher is None:
            return None
        name = monitor_of(tracker)
        return next((m for m in self.watcher.monitors if m.name == name), None)

    def _cadence_of(self, tracker: str) -> float:
        monitor = self._monitor_of(tracker)
        if monitor is not None and monitor.cadence is not None:
            return monitor.cadence
        return self.config.poll_interval

    def _is_scheduled(self, tracker: str) -> bool:
        monitor = self._monitor_of(tracker)
        return monitor is not None and monitor.scheduled

    def _plan(self, notice: Notice, config: Config) -> Plan:
        plan = build_plan(notice, config, self.parts.providers(config, self.dry_run))
        if notice.action == "hibernate":
            self.sleep.claim_hooks(notice, plan)
        return plan

    # ----------------------------------------------------------------- running

    def run(self, *, once: bool = False, process_ends: bool = False) -> int:
        """Poll until SIGTERM/SIGINT (or once); returns the exit status. `process_ends`:
        the process exits when this returns (`spotwatch run`), so a SIGTERM that comes after
        it is ignored rather than let kill it (signals.py)."""
        signals = self._signals = StopAndReload(self._hurry)
        # `--once` too: SIGTERM follows the same rules, from before the daemon prepares
        with signals.installed(process_ends=process_ends):
            self.prepare()
            assert self.watcher is not None
            signals.attach(self.watcher)
            if once:
                if signals.stop_signal is None:
                    self.watcher.poll_once()
                while self.responder.running() and signals.stop_signal is None:
                    self.responder.wait(ONCE_SLICE)
            else:
                self.watcher.run()
            if signals.stop_signal is not None:
                name = signal.Signals(signals.stop_signal).name
                emit(log, logging.INFO, "stopping", f"{name} received, stopping")
            self.shutdown(signals.stopped_at)
        return 0

    def shutdown(self, stopped_at: Optional[float] = None) -> None:
        """Start nothing new; let running steps finish (bounded), record what did not, write
        the state file one last time and give undelivered events what time is left: all
        within EXIT_WITHIN of `stopped_at` (the first SIGTERM, on the monotonic clock;
        None: now)."""
        began = time.monotonic() if stopped_at is None else stopped_at
        self._stopping.set()  # IMDS retries under way on other threads give up
        self.notifier.stopping()
        grace = max(0.0, self._shutdown_grace - (time.monotonic() - began))
        self.responder.shutdown(grace, self._hurry)
        self.store.flush()
        left = max(0.0, began + EXIT_WITHIN - EXIT_SLACK - time.monotonic())
        for told in self.parts.on_stop:
            told(left)
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
            self._learn_instance_id(self.client.timeout)
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
        assert self.watcher is not None
        wanted = wanted_interval(self.config, report, time.time())
        if wanted != self.watcher.interval:
            self.watcher.interval = wanted
            elevated = wanted != self.config.poll_interval
            why = "(rebalance recommendation: elevated risk)" if elevated else "again"
            emit(log, logging.INFO, "poll-interval", f"polling every {wanted:g} s {why}")

    def _save_trackers(self) -> None:
        assert self.watcher is not None
        current = {name: t.to_json() for name, t in self.watcher.trackers.items()}
        if (self.store.value("trackers") or {}) != current:
            self.store.set_value("trackers", current)

    def status_line(self, report: PollReport) -> str:
        return status_line(self.config, report, self.responder.running(), self.watcher_interval())

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
        fresh, rebuild = self.on.settle(fresh)
        self.config = fresh
        self.dry_run = self._forced_dry_run or fresh.dry_run
        logs.configure(fresh.log.level, fresh.log.format)
        if rebuild:  # the cloud, or a setting its client and monitors are built from
            self.client.close()
            self.client = self._make_client(fresh)
            if self.watcher is not None:
                self.watcher.set_monitors(self.cloud.monitors(fresh, self.client), {})
        if self.watcher is not None:
            self.watcher.interval = fresh.poll_interval
        for told in self.parts.on_reload:
            told(fresh)
        message = f"config reloaded from {', '.join(fresh.sources)}"
        emit(log, logging.INFO, "reloaded", message)
        self.notifier.reloaded(f"config reloaded; polling every {fresh.poll_interval:g} s")
        self.reload_replies.answer(Answer(True, message))

    def _refuse_reload(self, first: str, whole: str) -> None:
        self.notifier.reloaded(f"reload refused ({first}); running on the previous config")
        self.reload_replies.answer(Answer(False, whole))
