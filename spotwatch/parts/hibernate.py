"""Hibernate (docs/aws-facts.md, "Hibernation"): who pulls the trigger, and the trigger step itself.

A hibernate notice comes with no warning. The plan runs the hibernate hooks within
`hibernate.budget`, then `hibernate:trigger` (kind `hibernate`) decides, in this order:

1. `trigger: none` → never.
2. Already triggered for this notice (recorded before the command runs, so a restart
   does not trigger again), or the notice is older than the last resume (it is the very
   notice we just woke up from) → no.
3. A sleep is already under way: the systemd-sleep hook fired (`sleep-hook pre` left its
   marker) or systemd has a sleep job queued (`systemctl list-jobs`) → no.
4. `trigger: auto` and EC2's agent is in charge: IMDS `hibernation/configured` is `true`
   (cached by the daemon; never fetched here) and the hibinit agent or an acpid sleep
   handler is installed → no: EC2's ACPI sleep button event does it.
5. Dry run → "would run …". Otherwise run `hibernate.command`, bounded.

Where to look is a `Probes` value: a filesystem root prefix and the systemctl command.
The service always uses `/` and `systemctl`; only code that builds the daemon can choose
others (tests do, through `daemon_parts` and `run_daemon`). No environment variable can:
`/etc/spotwatch/environment` must not be able to name a command run as root.
This module knows nothing of the state directory: the ledger comes in as a `TriggerGate`.
"""

from __future__ import annotations

import glob
import logging
import os
import shlex
import subprocess
import threading
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Callable, List, Optional, Protocol, Sequence, Tuple

from spotwatch.config.schema import Config, HibernateSettings, HookSpec
from spotwatch.detection.notices import Notice
from spotwatch.logevents import emit
from spotwatch.presets.base import Services
from spotwatch.response.build import Providers, hook_stages
from spotwatch.response.deadline import NoticeClock
from spotwatch.response.hooks import HookStep, run_hook
from spotwatch.response.plan import Plan, Step, StepContext, StepOutcome
from spotwatch.state.schema import SKIPPED

log = logging.getLogger("spotwatch.hibernate")

TRIGGER_STEP = "hibernate:trigger"
TRIGGER_TIMEOUT = 10.0  # `systemctl hibernate` only queues a job: it returns at once
PROBE_TIMEOUT = 1.0  # systemctl list-jobs; no answer in time = unknown
# The trigger asks systemd for a queued sleep job while the hooks run; an answer this fresh
# when the hooks are over is used as is. A job queued since then is no harm: systemd merges
# a second hibernate request into the job already queued.
LOOKAHEAD_FRESH = 1.0
SLEEP_MARKER_SLACK = 60.0  # a `pre` marker older than budget + this is a sleep that never came

# What the hibinit agent (ec2-hibinit-agent, Amazon Linux / Ubuntu) and the legacy Spot
# hibernation agent (hibagent) install; any one of them means the agent is there.
AGENT_FILES = (
    "usr/bin/hibinit-agent",
    "usr/sbin/hibinit-agent",
    "usr/lib/systemd/system/hibinit-agent.service",
    "lib/systemd/system/hibinit-agent.service",
    "etc/systemd/system/hibinit-agent.service",
    "etc/hibinit-config.cfg",
    "var/lib/dpkg/info/ec2-hibinit-agent.list",
    "usr/bin/hibagent",
    "usr/bin/enable-ec2-spot-hibernation",
)
# acpid turns EC2's sleep-button event into `systemctl hibernate` through these.
ACPI_ACTIONS = ("etc/acpi/actions/sleep.sh", "etc/acpi/sleep.sh", "etc/acpi/actions/hibernate.sh")
ACPI_EVENTS = "etc/acpi/events"
SLEEP_WORDS = ("sleep", "hibernat", "sbtn")
SLEEP_UNITS = (
    "hibernate.target",
    "sleep.target",
    "hybrid-sleep.target",
    "suspend-then-hibernate.target",
    "systemd-hibernate.service",
    "systemd-hybrid-sleep.service",
    "systemd-suspend-then-hibernate.service",
)


@dataclass(frozen=True)
class Probes:
    """Where the host is looked at: a root prefix for files, and the systemctl command."""

    root: str = "/"
    systemctl: Tuple[str, ...] = ("systemctl",)
    timeout: float = PROBE_TIMEOUT

    def path(self, relative: str) -> str:
        return os.path.join(self.root, relative.lstrip("/"))

    def agent(self) -> Optional[str]:
        """What shows the hibinit agent or an acpid sleep handler is installed, or None."""
        return self.hibinit() or self.acpi_handler()

    def hibinit(self) -> Optional[str]:
        """A file of the hibinit agent (or the legacy hibagent), or None."""
        for relative in AGENT_FILES:
            if os.path.exists(self.path(relative)):
                return "/" + relative
        return None

    def acpi_handler(self) -> Optional[str]:
        """An acpid handler that turns EC2's sleep-button event into hibernation, or None."""
        for relative in ACPI_ACTIONS:
            if os.path.exists(self.path(relative)):
                return "/" + relative
        for event in sorted(glob.glob(os.path.join(self.path(ACPI_EVENTS), "*"))):
            if _mentions_sleep(event):
                return "/" + os.path.relpath(event, self.root)
        return None

    def ask_systemctl(self, *args: str) -> Optional[Tuple[int, str]]:
        """(exit status, stdout) of `systemctl ARGS`, or None when systemd cannot say (no
        systemctl, no answer within the timeout)."""
        try:
            answer = subprocess.run(
                [*self.systemctl, *args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                timeout=self.timeout,
                check=False,
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return answer.returncode, answer.stdout.decode("utf-8", "replace")

    def sleep_job(self) -> Optional[str]:
        """The queued systemd job that puts the machine to sleep, or None (none, or unknown:
        no systemd, no answer within the timeout)."""
        answer = self.ask_systemctl("list-jobs", "--no-legend", "--no-pager")
        if answer is None or answer[0] != 0:
            return None
        for line in answer[1].splitlines():
            words = line.split()
            if any(unit in words for unit in SLEEP_UNITS):
                return " ".join(words[:3])
        return None


def _mentions_sleep(path: str) -> bool:
    try:
        with open(path, "rb") as handle:
            text = handle.read(64 * 1024).decode("utf-8", "replace").lower()
    except OSError:
        return False
    lines = (line for line in text.splitlines() if not line.lstrip().startswith("#"))
    return any(word in line for line in lines for word in SLEEP_WORDS)


class TriggerGate(Protocol):
    """What the trigger needs from the state directory (`service.ledger.HibernateLedger`)."""

    def hooks_done(self, key: str) -> None: ...

    def triggered(self, key: str) -> Optional[float]: ...

    def claim_trigger(self, key: str) -> bool:
        """Mark the hooks done and claim the trigger, at once; False: triggered already."""

    def sleep_under_way(self, window: float) -> Optional[str]: ...

    def configured(self) -> Optional[bool]: ...

    def last_resume(self) -> Optional[float]: ...


def notice_key(notice: Notice) -> str:
    """Names one notice across processes and restarts."""
    return f"{notice.action}@{notice.time_text}"


def command_text(command: object) -> str:
    if isinstance(command, str):
        return command
    return " ".join(shlex.quote(str(part)) for part in command)  # type: ignore[attr-defined]


class HibernateTrigger(Step):
    kind = "hibernate"

    def __init__(
        self,
        settings: HibernateSettings,
        gate: TriggerGate,
        probes: Probes,
        *,
        timeout: float = TRIGGER_TIMEOUT,
    ) -> None:
        super().__init__(TRIGGER_STEP)
        self.settings = settings
        self.gate = gate
        self.probes = probes
        self.timeout = timeout
        self._lookahead: Optional[threading.Thread] = None
        self._early: Optional[Tuple[Optional[str], float]] = None  # (job, monotonic when)

    def look_ahead(self) -> None:
        """Ask systemd for a queued sleep job now, beside the hooks: the answer is ready
        when the trigger needs it, instead of a systemctl run between hooks and trigger."""
        if self.settings.trigger == "none" or self._lookahead is not None:
            return

        def ask() -> None:
            job = self.probes.sleep_job()
            self._early = (job, time.monotonic())

        self._lookahead = threading.Thread(target=ask, name="hibernate-probe", daemon=True)
        self._lookahead.start()

    def _sleep_job(self) -> Optional[str]:
        if self._lookahead is not None:
            self._lookahead.join(self.probes.timeout + 1.0)
            early = self._early
            if early is not None and time.monotonic() - early[1] < LOOKAHEAD_FRESH:
                return early[0]
        return self.probes.sleep_job()

    def run(self, ctx: StepContext) -> StepOutcome:
        notice = ctx.notice
        key = notice_key(notice)
        # The hooks are over (done, cut or skipped): a waiting sleep hook may go on. Either
        # hooks_done says so, or claim_trigger does in the same write as its claim.
        reason = self._reason_not_to(notice, key)
        if reason is not None:
            self.gate.hooks_done(key)
            emit(log, logging.INFO, "hibernate-no-trigger", f"not triggering: {reason}")
            return StepOutcome(SKIPPED, reason)
        what = command_text(self.settings.command)
        if ctx.dry_run:
            self.gate.hooks_done(key)
            emit(log, logging.WARNING, "hibernate-trigger", f"dry run: would run {what}")
            return StepOutcome(SKIPPED, f"dry run: would run {what}")
        if not self.gate.claim_trigger(key):
            return StepOutcome(SKIPPED, "already triggered for this notice")
        emit(log, logging.WARNING, "hibernate-trigger", f"triggering hibernation: {what}")
        spec = HookSpec(
            name="hibernate-trigger",
            command=self.settings.command,
            actions=("hibernate",),
            timeout=self.timeout,
        )
        # Bounded by its own timeout only: the budget was the hooks', and may be spent.
        own_clock = NoticeClock.budget(ctx.notice, self.timeout, per_hook=True)
        result = run_hook(spec, replace(ctx, clock=own_clock))
        return StepOutcome(result.status, f"{what}: {result.detail}")

    def _reason_not_to(self, notice: Notice, key: str) -> Optional[str]:
        mode = self.settings.trigger
        if mode == "none":
            return "hibernate.trigger is none"
        when = self.gate.triggered(key)
        if when is not None:
            return f"already triggered for this notice at {_iso(when)}"
        resumed = self.gate.last_resume()
        if resumed is not None and notice.epoch + 1.0 < resumed:
            return f"the notice predates the resume at {_iso(resumed)}: we woke up from it"
        marker = self.gate.sleep_under_way(self.settings.budget + SLEEP_MARKER_SLACK)
        if marker is not None:
            return f"a sleep is already under way ({marker})"
        job = self._sleep_job()
        if job is not None:
            return f"a sleep is already under way (systemd job {job})"
        if mode == "auto":
            configured = self.gate.configured()
            agent = self.probes.agent() if configured is not False else None
            if configured and agent is not None:
                return (
                    "EC2's hibernation agent is in charge "
                    f"(hibernation/configured is true, {agent} installed)"
                )
            if configured is None and agent is not None:
                # Unknown (IMDS did not answer): with the agent installed, a second
                # hibernation is the worse mistake; the agent handles EC2's signal.
                return (
                    f"hibernation/configured is unknown and {agent} is installed: "
                    "leaving the hibernation to EC2's agent"
                )
        return None


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class SkippedStep(Step):
    """A step that stands in for one another party already did (kept in the status)."""

    def __init__(self, name: str, kind: str, detail: str) -> None:
        super().__init__(name)
        self.kind = kind
        self.detail = detail

    def run(self, ctx: StepContext) -> StepOutcome:
        return StepOutcome(SKIPPED, self.detail)


def skip_hooks(plan: Plan, detail: str) -> None:
    """Replace the plan's hook steps by skipped ones (the sleep hook ran them)."""
    plan.stages = [
        tuple(SkippedStep(s.name, s.kind, detail) if s.kind == HookStep.kind else s for s in stage)
        for stage in plan.stages
    ]


def add_hibernate_trigger(
    base: Callable[[Config, bool], Providers],
    make_gate: Callable[[str], TriggerGate],
    probes: Optional[Probes] = None,
) -> Callable[[Config, bool], Providers]:
    """Wrap a `Providers` factory so that it also gives the hibernate trigger step."""

    def providers(config: Config, dry_run: bool) -> Providers:
        parts = base(config, dry_run)
        if parts.hibernate_trigger is None:
            gate = make_gate(config.state_dir)
            where = probes or Probes()

            def steps(_notice: Notice, cfg: Config) -> List[Step]:
                trigger = HibernateTrigger(cfg.hibernate, gate, where)
                trigger.look_ahead()  # the plan is being built: its hooks start next
                return [trigger]

            parts.hibernate_trigger = steps
        return parts

    return providers


def hooks_plan(
    notice: Notice, hooks: Sequence[HookSpec], services: Optional[Services] = None
) -> Plan:
    """Just hooks (the sleep hook's plans); hibernate's are held to its budget."""
    hard = notice.action == "hibernate"
    return Plan(notice=notice, stages=hook_stages(hooks, hard=hard, services=services))
