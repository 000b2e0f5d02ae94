"""`spotwatch rehearse`: the configured response, end to end, against a simulated notice.

The real daemon (`Daemon`, its watcher, planner, runner and hook runner) is pointed at the
built-in IMDS simulator on a free loopback port, with a state directory of its own and a
short poll interval. Once its first poll is done, the simulator raises the notice with
`--lead` seconds of warning; the daemon detects it and responds as it would on EC2. Hooks
really run, with SPOTWATCH_SOURCE=rehearsal (the daemon's `notice_source`) and
SPOTWATCH_DRY_RUN=1 unless `--live-ecs`; ECS changes are dry-run unless `--live-ecs`; the
instance action and the hibernation trigger are always dry-run. Metrics are off (the real
daemon's textfile and port are left alone); a configured webhook gets the events, marked
with source "rehearsal".

The rehearsal ends as soon as the response has ended, not at the notice time. It prints a
timeline (t+0 is the moment the notice was raised): detection and its latency, each step's
start and end with its result and the time left before the deadline. A step that ended
after the deadline is marked MISSED. Exit 0 when every step finished in time, 1 when one
failed or missed the deadline, 78 for a bad config (raised to the CLI).

With no config file at all, a built-in demo config with one hook that shows its
environment is used, so `pip install . && spotwatch rehearse` works on any machine.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from typing import IO, Callable, Dict, List, Optional

from spotwatch.commands.settings import load_service_config
from spotwatch.config.schema import (
    DEFAULT_CONFD_DIR,
    DEFAULT_CONFIG_PATH,
    Config,
    HookSpec,
    ImdsSettings,
    MetricsSettings,
)
from spotwatch.daemon.shell import Daemon
from spotwatch.daemon.wiring import daemon_hooks
from spotwatch.detection.notices import SOURCE_REHEARSAL, Notice, parse_utc_time
from spotwatch.detection.watcher import PollReport
from spotwatch.exits import EX_FAILURE, EX_OK
from spotwatch.host import logs
from spotwatch.host.notify import Notifier
from spotwatch.response.build import Providers, StepsFor
from spotwatch.response.hooks import KILL_GRACE
from spotwatch.response.plan import OK, SKIPPED, Plan, Step, StepContext, StepOutcome
from spotwatch.simulator.imds import ImdsSimulator
from spotwatch.telemetry.webhook import flush_all as flush_webhooks

ACTIONS = ("terminate", "stop", "hibernate", "rebalance")
MAX_POLL_INTERVAL = 0.5  # a rehearsal polls at least this often, so detection is quick
PROGRESS_EVERY = 0.1

DEMO_HOOK = (
    'echo "demo hook: $SPOTWATCH_ACTION notice for $SPOTWATCH_NOTICE_TIME,'
    ' $SPOTWATCH_SECONDS_LEFT s left"; env | grep ^SPOTWATCH_ | sort'
)


def has_config_file(path: Optional[str]) -> bool:
    """A named file always counts (missing: a config error later); else the default file or
    any conf.d drop-in."""
    if path:
        return True
    if os.path.exists(DEFAULT_CONFIG_PATH):
        return True
    try:
        return any(
            n.endswith(".yaml") and not n.startswith(".") for n in os.listdir(DEFAULT_CONFD_DIR)
        )
    except OSError:
        return False


def demo_config() -> Config:
    """No config anywhere: one hook that prints its environment, for every action."""
    return Config(
        deadline_margin=10.0,
        imds=ImdsSettings(user_data=False),
        hooks=(
            HookSpec(
                name="demo",
                command=DEMO_HOOK,
                actions=("terminate", "stop", "hibernate", "rebalance"),
                timeout=30.0,
            ),
        ),
        ecs=replace(Config().ecs, enabled=False),
        sources=("built-in demo config",),
    )


# --------------------------------------------------------------------- dry-run wrappers


class DryRunStep(Step):
    """Runs a step with dry_run forced on (instance action, hibernation trigger)."""

    def __init__(self, inner: Step) -> None:
        super().__init__(inner.name)
        self.kind = inner.kind
        self.inner = inner

    def run(self, ctx: StepContext) -> StepOutcome:
        return self.inner.run(replace(ctx, dry_run=True))


def _always_dry(provider: Optional[StepsFor]) -> Optional[StepsFor]:
    if provider is None:
        return None
    give = provider

    def steps(notice: Notice, config: Config) -> List[Step]:
        return [DryRunStep(step) for step in give(notice, config)]

    return steps


def rehearsal_providers(
    base: Callable[[Config, bool], Providers],
) -> Callable[[Config, bool], Providers]:
    """The configured providers, but never ending or hibernating this instance for real."""

    def providers(config: Config, dry_run: bool) -> Providers:
        parts = base(config, dry_run)
        return replace(
            parts,
            instance=_always_dry(parts.instance),
            hibernate_trigger=_always_dry(parts.hibernate_trigger),
        )

    return providers


# --------------------------------------------------------------------- the timeline


@dataclass
class StepRecord:
    name: str
    kind: str
    started: float  # wall
    ended: Optional[float] = None
    status: str = "running"
    detail: str = ""


class Timeline:
    """What happened, relative to the moment the notice was raised; printed as it happens."""

    def __init__(self, out: IO[str], *, live: bool) -> None:
        self.out = out
        self.live = live  # a terminal: keep one updating progress line at the bottom
        self._lock = threading.RLock()
        self._progress_width = 0
        self.t0_wall: Optional[float] = None
        self.first_poll = threading.Event()
        self.detected = threading.Event()
        self.done = threading.Event()
        self.detected_wall: Optional[float] = None
        self.notice: Optional[Notice] = None
        self.deadline: Optional[float] = None  # wall
        self.steps: Dict[str, StepRecord] = {}
        self.hibernate_budget = 0.0
        self.margin = 0.0
        self.interval = 0.0
        self.configured_interval = 0.0
        self.completed = threading.Event()  # the response ended (not merely the rehearsal)

    # -- output

    def rel(self, wall: Optional[float]) -> str:
        if wall is None or self.t0_wall is None:
            return "-"
        return f"t{wall - self.t0_wall:+.3f}"

    def left(self, wall: float) -> float:
        assert self.deadline is not None
        return self.deadline - wall

    def line(self, text: str, wall: Optional[float] = None) -> None:
        stamp = self.rel(wall if wall is not None else time.time()) if self.t0_wall else ""
        with self._lock:
            self._clear_progress()
            self.out.write(f"  {stamp:>10}  {text}\n" if stamp else f"{text}\n")
            self.out.flush()

    def plain(self, text: str) -> None:
        with self._lock:
            self._clear_progress()
            self.out.write(text + "\n")
            self.out.flush()

    def _clear_progress(self) -> None:
        if self._progress_width:
            self.out.write("\r" + " " * self._progress_width + "\r")
            self._progress_width = 0

    def progress(self) -> None:
        if not self.live or self.t0_wall is None:
            return
        now = time.time()
        parts = [f"t+{now - self.t0_wall:.1f}"]
        if self.deadline is not None:
            parts.append(f"deadline in {self.left(now):.1f} s")
        elif not self.detected.is_set():
            parts.append("waiting for the daemon to see the notice")
        with self._lock:
            running = [r for r in self.steps.values() if r.ended is None]
            if running:
                parts.append(
                    "running: " + ", ".join(f"{r.name} {now - r.started:.1f} s" for r in running)
                )
            text = "  ".join(parts)[:160]
            self.out.write("\r" + text + " " * max(0, self._progress_width - len(text)))
            self.out.flush()
            self._progress_width = len(text)

    # -- daemon seams

    def on_poll(self, report: PollReport) -> None:
        self.first_poll.set()

    def on_notice(self, monitor: str, notice: Notice) -> None:
        """Called on the poll thread before the response starts: the detection line comes
        before any step's."""
        now = time.time()
        self.detected_wall = now
        self.notice = notice
        if notice.action == "hibernate":
            self.deadline = now + self.hibernate_budget  # the budget stands in for a warning
        else:
            self.deadline = notice.epoch - self.margin
        latency = now - (self.t0_wall or now)
        self.line(
            f"detected after {latency:.3f} s (polling every {self.interval:g} s here, every"
            f" {self.configured_interval:g} s as configured); deadline t+"
            f"{self.deadline - (self.t0_wall or now):.1f}, {self.left(now):.1f} s away",
            now,
        )
        self.detected.set()

    def journal(self, monitor: str) -> RehearsalJournal:
        return RehearsalJournal(self)


class RehearsalJournal:
    def __init__(self, timeline: Timeline) -> None:
        self.timeline = timeline

    def finished_status(self, step: str) -> Optional[str]:
        return None

    def step_started(self, step: Step, wall: float) -> None:
        with self.timeline._lock:
            self.timeline.steps[step.name] = StepRecord(step.name, step.kind, wall)
        self.timeline.line(f"start   {step.name}", wall)

    def step_ended(self, step: Step, outcome: StepOutcome, started: float, ended: float) -> None:
        timeline = self.timeline
        with timeline._lock:
            record = timeline.steps.setdefault(step.name, StepRecord(step.name, step.kind, started))
            record.ended, record.status, record.detail = ended, outcome.status, outcome.detail
        timeline.line(
            f"end     {step.name}: {verdict(timeline, record)}  ({outcome.detail})", ended
        )

    def response_ended(self, plan: Plan, outcomes: Dict[str, StepOutcome]) -> None:
        self.timeline.line("response complete")
        self.timeline.completed.set()
        self.timeline.done.set()


def missed(timeline: Timeline, record: StepRecord) -> bool:
    return (
        record.ended is not None
        and timeline.deadline is not None
        and record.ended > timeline.deadline
    )


def verdict(timeline: Timeline, record: StepRecord) -> str:
    """`ok, 108.4 s left` / `timeout  MISSED by 0.6 s` / `failed, 3.0 s left`."""
    if record.ended is None:
        return f"{record.status}  DID NOT END"
    left = timeline.left(record.ended) if timeline.deadline is not None else 0.0
    if missed(timeline, record):
        return f"{record.status.upper()}  MISSED the deadline by {-left:.1f} s"
    marker = "" if record.status in (OK, SKIPPED) else f"{record.status.upper()}  "
    return f"{marker or record.status + ', '}{left:.1f} s left"


class TimelineLogHandler(logging.Handler):
    """Hook output and warnings, in the timeline, in the order they happen."""

    SHOWN_ELSEWHERE = frozenset({"notice", "hook-end", "hook-failed", "hook-start"})

    def __init__(self, timeline: Timeline) -> None:
        super().__init__(logging.INFO)
        self.timeline = timeline

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields = getattr(record, "spotwatch", None) or {}
            event = fields.get("event") if isinstance(fields, dict) else None
            if event == "hook-output":
                self.timeline.line(f"  | {record.getMessage()}", record.created)
            elif record.levelno >= logging.WARNING and event not in self.SHOWN_ELSEWHERE:
                self.timeline.line(
                    f"{record.levelname.lower()}: {record.getMessage()}", record.created
                )
        except Exception:
            self.handleError(record)


# --------------------------------------------------------------------- the rehearsal


def run_rehearse(
    path: Optional[str],
    *,
    action: str = "terminate",
    lead: Optional[float] = None,
    live_ecs: bool = False,
    out: Optional[IO[str]] = None,
) -> int:

    out = out or sys.stdout
    logs.configure("warning")  # config loading speaks through the log
    if has_config_file(path):
        config = load_service_config(path)  # ConfigError -> exit 78 in the CLI
        where = ", ".join(s for s in config.sources if s != "defaults")
    else:
        config = demo_config()
        where = f"built-in demo config (no {DEFAULT_CONFIG_PATH}, no -c, no $SPOTWATCH_CONFIG)"
    if lead is None:
        lead = 0.0 if action == "hibernate" else 120.0
    if action == "rebalance" and not config.rebalance.enabled:
        print("rebalance.enabled is false: spotwatch ignores rebalance recommendations,", file=out)
        print("so there is nothing to rehearse for --action rebalance.", file=out)
        return EX_FAILURE
    live = bool(getattr(out, "isatty", lambda: False)())
    with tempfile.TemporaryDirectory(prefix="spotwatch-rehearse-") as scratch:
        return Rehearsal(config, where, action, lead, live_ecs, out, live, scratch).run()


class Rehearsal:
    def __init__(
        self,
        config: Config,
        where: str,
        action: str,
        lead: float,
        live_ecs: bool,
        out: IO[str],
        live: bool,
        scratch: str,
    ) -> None:
        self.config = config
        self.where = where
        self.action = action
        self.lead = lead
        self.live_ecs = live_ecs
        self.timeline = Timeline(out, live=live)
        self.timeline.hibernate_budget = config.hibernate.budget
        self.timeline.margin = config.deadline_margin
        self.scratch = scratch
        self.failure: Optional[str] = None

    def run(self) -> int:

        timeline = self.timeline
        with ImdsSimulator() as sim:
            config = replace(
                self.config,
                poll_interval=min(self.config.poll_interval, MAX_POLL_INTERVAL),
                state_dir=os.path.join(self.scratch, "state"),
                imds=replace(self.config.imds, endpoint=sim.endpoint, user_data=False),
                metrics=MetricsSettings(),  # the real daemon's textfile and port stay its own
            )
            hooks = daemon_hooks(config)
            hooks.providers = rehearsal_providers(hooks.providers)
            hooks.on_poll.append(timeline.on_poll)
            hooks.on_notice.append(timeline.on_notice)
            hooks.journals.append(timeline.journal)
            daemon = Daemon(
                config,
                dry_run=not self.live_ecs,
                notifier=Notifier(""),
                hooks=hooks,
                notice_source=SOURCE_REHEARSAL,
            )
            self.timeline.interval = config.poll_interval
            self.timeline.configured_interval = self.config.poll_interval
            self._header(config, sim.endpoint, sim.instance_id)
            logs.configure("warning")
            root = logging.getLogger(logs.ROOT)
            for handler in list(root.handlers):
                root.removeHandler(handler)
            root.setLevel(logging.INFO)
            root.addHandler(TimelineLogHandler(timeline))
            supervisor = threading.Thread(
                target=self._supervise, args=(daemon, sim), name="rehearsal", daemon=True
            )
            supervisor.start()
            try:
                daemon.run()  # the real poll loop, on the main thread (SIGINT/SIGTERM stop it)
            except OSError as failure:
                self.failure = f"the daemon could not run: {failure}"
            finally:
                timeline.done.set()  # an interrupted rehearsal ends the supervisor too
                supervisor.join(5)
            if not timeline.completed.is_set():
                self.failure = self.failure or "interrupted before the response ended"
            flush_webhooks(10.0)  # queued events go out (or fail, in the timeline) first
            logs.configure("warning")
        return self._summary()

    def _header(self, config: Config, endpoint: str, instance_id: str) -> None:
        t = self.timeline
        lead = f"{self.lead:g} s of warning" if self.action != "hibernate" else "no warning"
        t.plain(f"spotwatch rehearse: a {self.action} notice with {lead}")
        t.plain(f"  config    {self.where}")
        t.plain(
            f"  IMDS      simulator at {endpoint} ({instance_id}), polled every "
            f"{config.poll_interval:g} s (configured: {self.config.poll_interval:g} s)"
        )
        if self.action == "hibernate":
            t.plain(f"  deadline  hibernate.budget {config.hibernate.budget:g} s after detection")
        else:
            t.plain(f"  deadline  notice time - deadline_margin {config.deadline_margin:g} s")
        ecs = "ECS changes LIVE (--live-ecs)" if self.live_ecs else "ECS changes dry-run"
        t.plain(
            f"  dry run   {ecs}; instance action and hibernation trigger dry-run; hooks run "
            f"for real with SPOTWATCH_SOURCE=rehearsal"
        )
        if config.webhook.url:
            from spotwatch.telemetry.webhook import safe_url

            t.plain(
                f"  webhook   {safe_url(config.webhook.url)} gets the events (source rehearsal)"
            )
        t.plain("")

    def _supervise(self, daemon: object, sim: object) -> None:

        assert isinstance(daemon, Daemon) and isinstance(sim, ImdsSimulator)
        t = self.timeline
        try:
            if not self._wait(t.first_poll, 10.0):
                self.failure = self.failure or "the daemon did not poll the simulator"
                return
            t.t0_wall = time.time()
            when = sim.raise_notice(self.action, self.lead)
            notice_epoch = _epoch(when)
            t.line(
                f"notice raised: {self.action} at {when} (t{notice_epoch - t.t0_wall:+.1f})",
                t.t0_wall,
            )
            interval = daemon.config.poll_interval
            if not self._wait(t.detected, 5.0 + 10 * interval):
                self.failure = self.failure or "the daemon did not detect the notice"
                return
            assert t.deadline is not None
            budget = max(0.0, t.deadline - time.time()) + KILL_GRACE + 30.0
            if not self._wait(t.done, budget):
                self.failure = self.failure or "the response did not end in time"
        finally:
            watcher = daemon.watcher
            if watcher is not None:
                watcher.stop()

    def _wait(self, event: threading.Event, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while not event.is_set():
            if self.timeline.done.is_set() and event is not self.timeline.done:
                self.failure = self.failure or "interrupted"
                return False
            remaining = end - time.monotonic()
            if remaining <= 0:
                return False
            self.timeline.progress()
            event.wait(min(PROGRESS_EVERY, remaining))
        return True

    def _summary(self) -> int:
        t = self.timeline
        t.plain("")
        records = list(t.steps.values())
        if records and t.deadline is not None:
            width = max(len(r.name) for r in records)
            t.plain(f"  {'step':<{width}}  {'started':>9}  {'ended':>9}  {'took':>7}  result")
            for r in records:
                took = f"{r.ended - r.started:.2f}s" if r.ended is not None else "-"
                t.plain(
                    f"  {r.name:<{width}}  {t.rel(r.started):>9}  {t.rel(r.ended):>9}  {took:>7}  "
                    f"{verdict(t, r)}"
                )
            t.plain("")
        bad = [
            r for r in records if r.ended is None or r.status not in (OK, SKIPPED) or missed(t, r)
        ]
        if self.failure:
            t.plain(f"rehearsal FAILED: {self.failure}")
            return EX_FAILURE
        if t.detected.is_set() and not records:
            t.plain(f"no steps: nothing is configured to run for {self.action}")
            return EX_OK
        if bad:
            late = sum(missed(t, r) for r in bad)
            t.plain(
                f"rehearsal FAILED: {len(bad)} of {len(records)} steps failed or missed the "
                f"deadline ({late} missed it)"
            )
            return EX_FAILURE
        assert t.deadline is not None
        last = max(r.ended for r in records if r.ended is not None)
        t.plain(
            f"rehearsal ok: every step finished before the deadline, the last with "
            f"{t.left(last):.1f} s to spare"
        )
        return EX_OK


def _epoch(text: str) -> float:

    parsed = parse_utc_time(text)
    return parsed.timestamp() if parsed is not None else time.time()
