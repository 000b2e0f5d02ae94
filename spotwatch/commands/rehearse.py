"""`spotwatch rehearse`: the configured response, end to end, against a simulated notice.

The real daemon (`Daemon`, its watcher, planner, runner and hook runner) is pointed at the
cloud's metadata simulator (AWS's IMDS, Google's or Azure's metadata service: `--cloud`, else
the cloud the config or the firmware names) on a free loopback port, with a state directory
of its own and a short poll interval. Once its first poll is done, the simulator raises the
notice with `--lead` seconds of warning; the daemon detects it and responds as it would on
the cloud. Hooks really run, with SPOTWATCH_SOURCE=rehearsal (the daemon's `notice_source`) and
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
from dataclasses import replace
from typing import IO, Callable, List, Optional

from spotwatch.clouds.cloud import Cloud
from spotwatch.clouds.registry import Settled, settle
from spotwatch.commands.rehearsed import (
    SHUTDOWN,
    default_lead,
    demo_config,
    has_config_file,
    prepare_state,
)
from spotwatch.commands.settings import load_service_config
from spotwatch.commands.timeline import Timeline, TimelineLogHandler, missed, verdict
from spotwatch.config.schema import DEFAULT_CONFIG_PATH, Config, MetricsSettings
from spotwatch.daemon.shell import Daemon
from spotwatch.daemon.shutdown import ShutdownAnswer
from spotwatch.daemon.wiring import daemon_parts
from spotwatch.detection.notices import SOURCE_REHEARSAL, Notice
from spotwatch.exits import EX_CONFIG, EX_FAILURE, EX_OK
from spotwatch.host import logs
from spotwatch.host.notify import Notifier
from spotwatch.response.build import Providers, StepsFor
from spotwatch.response.deadline import KILL_GRACE
from spotwatch.response.plan import Step, StepContext, StepOutcome
from spotwatch.simulator.service import SimulatedService
from spotwatch.state.schema import OK, SKIPPED
from spotwatch.telemetry.webhook import flush_all as flush_webhooks
from spotwatch.telemetry.webhook import safe_url

MAX_POLL_INTERVAL = 0.5  # a rehearsal polls at least this often, so detection is quick
PROGRESS_EVERY = 0.1

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
            lb_deregister=_always_dry(parts.lb_deregister),
            asg_detach=_always_dry(parts.asg_detach),
            hibernate_trigger=_always_dry(parts.hibernate_trigger),
        )

    return providers


# --------------------------------------------------------------------- the rehearsal


def run_rehearse(
    path: Optional[str],
    *,
    action: str = "terminate",
    lead: Optional[float] = None,
    live_ecs: bool = False,
    out: Optional[IO[str]] = None,
    cloud: Optional[str] = None,
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
        lead = default_lead(action)

    def on_the_cloud(raw: Config) -> Settled:
        """`--cloud`, else the config's `cloud:` (auto: the firmware's)."""
        return settle(raw if cloud is None else replace(raw, cloud=cloud))

    chosen = on_the_cloud(config).cloud
    if action not in chosen.rehearsals and action != SHUTDOWN:
        print(
            f"--action {action}: {chosen.name} rehearses {', '.join(chosen.rehearsals)}",
            file=sys.stderr,
        )
        return EX_CONFIG
    if action == "rebalance" and not config.rebalance.enabled:
        print("rebalance.enabled is false: spotwatch ignores rebalance recommendations,", file=out)
        print("so there is nothing to rehearse for --action rebalance.", file=out)
        return EX_FAILURE
    live = bool(getattr(out, "isatty", lambda: False)())
    with tempfile.TemporaryDirectory(prefix="spotwatch-rehearse-") as scratch:
        rehearsal = Rehearsal(config, where, action, lead, live_ecs, out, live, scratch)
        return rehearsal.run(chosen, on_the_cloud)


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
        self.scratch = scratch
        self.failure: Optional[str] = None
        # `--action shutdown`: the daemon's answer to a shutdown logind announced, told of a
        # simulated one; it lets the shutdown go on by printing so.
        self.shutdown = ShutdownAnswer()
        self.released = threading.Event()

    def run(self, cloud: Cloud, on_the_cloud: Callable[[Config], Settled]) -> int:

        timeline = self.timeline
        self.cloud = cloud
        with cloud.rehearsal_simulator() as sim:
            config = replace(
                self.config,
                poll_interval=min(self.config.poll_interval, MAX_POLL_INTERVAL),
                state_dir=os.path.join(self.scratch, "state"),
                imds=replace(self.config.imds, user_data=False),
                metrics=MetricsSettings(),  # the real daemon's textfile and port stay its own
            )
            config = cloud.watching(self.action, cloud.pointed_at(config, sim.endpoint))
            # No rehearsal takes logind's shutdown lock: the real daemon's is the one that counts.
            config = replace(config, shutdown=replace(config.shutdown, enabled=False))
            prepare_state(self.action, config.state_dir, sim.instance_id)
            parts = daemon_parts(config, settle=on_the_cloud)
            parts.providers = rehearsal_providers(parts.providers)
            parts.on_poll.append(timeline.on_poll)
            parts.on_start.append(self.shutdown.bind)
            parts.listeners.append(timeline)
            daemon = Daemon(
                config,
                dry_run=not self.live_ecs,
                notifier=Notifier(""),
                parts=parts,
                notice_source=SOURCE_REHEARSAL,
                settle=on_the_cloud,
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
            if self.action == "start":  # its signal is the daemon's start itself
                timeline.t0_wall = time.time()
                timeline.line("the daemon starts on a new boot, after a stop", timeline.t0_wall)
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
        if self.action == SHUTDOWN:
            what = "a shutdown no notice announced"
        else:
            what = self.cloud.rehearsal_title(self.action, self.lead)
        t.plain(f"spotwatch rehearse: {what}")
        t.plain(f"  config    {self.where}")
        t.plain(
            f"  IMDS      {self.cloud.title} simulator at {endpoint} ({instance_id}), polled "
            f"every {config.poll_interval:g} s (configured: {self.config.poll_interval:g} s)"
        )
        if self.action == SHUTDOWN:
            deadline = (
                f"announced + shutdown.budget {config.shutdown.budget:g} s - deadline_margin "
                f"{config.deadline_margin:g} s"
            )
        else:
            deadline = self.cloud.deadline_words(self.action, config)
        t.plain(f"  deadline  {deadline}")
        ecs = "ECS changes LIVE (--live-ecs)" if self.live_ecs else "ECS changes dry-run"
        t.plain(
            f"  dry run   {ecs}; instance action and hibernation trigger dry-run; hooks run "
            f"for real with SPOTWATCH_SOURCE=rehearsal"
        )
        if config.webhook.url:
            t.plain(
                f"  webhook   {safe_url(config.webhook.url)} gets the events (source rehearsal)"
            )
        t.plain("")

    def _supervise(self, daemon: object, sim: object) -> None:

        assert isinstance(daemon, Daemon) and isinstance(sim, SimulatedService)
        t = self.timeline
        try:
            if not self._wait(t.first_poll, 10.0):
                self.failure = self.failure or "the daemon did not poll the simulator"
                return
            if t.t0_wall is None:
                t.t0_wall = time.time()
            if self.action == SHUTDOWN:
                self._announce()
                said: Optional[str] = "shutdown announced (simulated: no lock is taken)"
            else:
                said = self.cloud.rehearse(sim, self.action, self.lead)
            if said is not None:
                t.line(said, t.t0_wall)
            interval = daemon.config.poll_interval
            if not self._wait(t.detected, 5.0 + 10 * interval):
                self.failure = self.failure or "the daemon did not detect the notice"
                return
            assert t.deadline is not None
            budget = max(0.0, t.deadline - time.time()) + KILL_GRACE + 30.0
            if not self._wait(t.done, budget):
                self.failure = self.failure or "the response did not end in time"
            elif self.action == "shutdown":
                self.released.wait(KILL_GRACE)  # its line comes before the summary
        finally:
            watcher = daemon.watcher
            if watcher is not None:
                watcher.stop()

    def _announce(self) -> None:
        threading.Thread(
            target=self.shutdown.announced,
            args=(self._release,),
            name="shutdown-answer",
            daemon=True,
        ).start()

    def _release(self, why: str) -> None:
        self.timeline.line(f"the shutdown would go on now: {why} (no lock was taken)")
        self.released.set()

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
