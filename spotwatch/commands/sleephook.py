"""`spotwatch sleep-hook pre|post ACTION`: called by systemd-sleep (CONTRACT.md §1, §5).

systemd runs `/usr/lib/systemd/system-sleep/*` with `pre hibernate` before the machine
sleeps and `post hibernate` after it resumes. Only `hibernate` concerns us; any other action
(`suspend`, `hybrid-sleep`, …) is a no-op.

- `pre hibernate`: mark the sleep as under way (the daemon's trigger then stands back) and
  run the hibernate hooks, unless the daemon has claimed them for this sleep cycle, in which
  case wait (within the budget) for the daemon's hooks to end. The claim is taken through the
  ledger in the state directory under an flock, so the daemon and this hook never both run
  them. With no notice at all (EC2's ACPI event outran the poll) the hooks run with the time
  of now as notice time.
- `post hibernate`: run the `resume` hooks unless the daemon already did for this resume, and
  bump the resume count; the daemon sees that on its next poll and re-arms (new token, the
  handled notice closed).

Both run with SPOTWATCH_SOURCE=sleep-hook, are bounded by `hibernate.budget` (plus the
SIGTERM grace a cut hook gets) and always exit 0: failing here must never block sleep.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from typing import Dict, Optional

from spotwatch.config.schema import Config
from spotwatch.detection.notices import SOURCE_SLEEP_HOOK, Notice
from spotwatch.logevents import emit
from spotwatch.response.hibernate import hooks_plan, now_notice, with_source
from spotwatch.response.hooks import KILL_GRACE
from spotwatch.response.plan import NoticeClock, Plan, Step, StepContext, StepOutcome
from spotwatch.response.runner import Runner, summarize
from spotwatch.state.ledger import BY_SLEEP_HOOK, HibernateLedger
from spotwatch.state.store import STATE_FILE

log = logging.getLogger("spotwatch.sleephook")

WAIT_SLICE = 0.05
EXIT_SLACK = 1.0


class _LogJournal:
    """The sleep hook keeps no response record of its own: the ledger is its record."""

    def finished_status(self, step: str) -> Optional[str]:
        return None

    def step_started(self, step: Step, wall: float) -> None:
        pass

    def step_ended(self, step: Step, outcome: StepOutcome, started: float, ended: float) -> None:
        pass

    def response_ended(self, plan: Plan, outcomes: Dict[str, StepOutcome]) -> None:
        pass


def run_sleep_hook(path: Optional[str], phase: str, action: str) -> int:
    """Everything is caught: the answer to systemd is always 0."""
    try:
        from spotwatch.host import logs

        logs.configure()
        if action != "hibernate" or phase not in ("pre", "post"):
            log.debug("sleep-hook %s %s: nothing to do", phase, action)
            return 0
        from spotwatch.commands.settings import load_service_config

        config = load_service_config(path)
        logs.configure(config.log.level, config.log.format)
        worker = threading.Thread(
            target=_guarded, args=(config, phase), name="sleep-hook", daemon=True
        )
        worker.start()
        # Never hold up sleep for longer than the budget (and the grace a cut hook gets).
        worker.join(config.hibernate.budget + KILL_GRACE + EXIT_SLACK)
        if worker.is_alive():
            emit(log, logging.ERROR, "sleep-hook", f"sleep-hook {phase}: out of time; exiting")
    except BaseException as failure:
        emit(log, logging.ERROR, "sleep-hook", f"sleep-hook {phase} {action} failed: {failure!r}")
    return 0


def _guarded(config: Config, phase: str) -> None:
    try:
        if phase == "pre":
            before_sleep(config)
        else:
            after_resume(config)
    except Exception:
        log.exception("sleep-hook %s failed", phase)


def before_sleep(config: Config) -> None:
    started = time.monotonic()
    end_by = started + config.hibernate.budget
    ledger = HibernateLedger(config.state_dir)
    notice = _current_notice(config) or now_notice("hibernate", SOURCE_SLEEP_HOOK)
    key = f"sleep-hook@{notice.time_text}"
    ledger.sleep_started()
    standing = ledger.claim_hooks(key, BY_SLEEP_HOOK)
    if standing is not None:
        _wait_for_claim(ledger, standing, end_by)
        return
    hooks = config.hooks_for("hibernate")
    emit(
        log,
        logging.WARNING,
        "sleep-hook",
        f"going to sleep: running {len(hooks)} hibernate hook(s) "
        f"within {config.hibernate.budget:g} s",
        action="hibernate",
    )
    try:
        _run(config, notice, hooks_plan(notice, hooks, end_by), margin=0.0)
    finally:
        ledger.hooks_done(key)


def _wait_for_claim(ledger: HibernateLedger, claim: Dict[str, object], end_by: float) -> None:
    """The daemon runs (or ran) the hooks: give them until the budget ends, no longer."""
    emit(
        log,
        logging.INFO,
        "sleep-hook",
        f"hibernate hooks already claimed by the {claim.get('by')}; not running them again",
    )
    while time.monotonic() < end_by:
        current = ledger.hooks_claim()
        if current is None or current.get("done") or current.get("key") != claim.get("key"):
            return
        time.sleep(WAIT_SLICE)
    emit(log, logging.WARNING, "sleep-hook", "the daemon's hibernate hooks outlived the budget")


def after_resume(config: Config) -> None:
    ledger = HibernateLedger(config.state_dir)
    if not ledger.claim_resume(BY_SLEEP_HOOK):
        emit(log, logging.INFO, "sleep-hook", "this resume was already handled; nothing to do")
        return
    hooks = config.hooks_for("resume")
    emit(log, logging.WARNING, "sleep-hook", f"resumed: running {len(hooks)} resume hook(s)")
    budget = config.hibernate.budget
    notice = now_notice("resume", SOURCE_SLEEP_HOOK)
    _run(config, notice, hooks_plan(notice, hooks, time.monotonic() + budget), margin=-budget)


def _run(config: Config, notice: Notice, plan: Plan, *, margin: float) -> None:
    if not plan.stages:
        return
    ctx = StepContext(
        clock=NoticeClock(notice, margin), instance_id=_instance_id(config), dry_run=config.dry_run
    )
    outcomes = Runner(plan, ctx, _LogJournal()).run()
    emit(log, logging.INFO, "sleep-hook", "hooks ended: " + ", ".join(summarize(outcomes)))


def _state(config: Config) -> Dict[str, object]:
    try:
        with open(os.path.join(config.state_dir, STATE_FILE), "rb") as handle:
            value = json.loads(handle.read().decode("utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def _current_notice(config: Config) -> Optional[Notice]:
    """The hibernate notice the daemon knows, if any (for SPOTWATCH_NOTICE_TIME)."""
    trackers = _state(config).get("trackers")
    spot = trackers.get("spot") if isinstance(trackers, dict) else None
    known = spot.get("known") if isinstance(spot, dict) else None
    if not isinstance(known, dict) or known.get("action") != "hibernate":
        return None
    try:
        return with_source(Notice.from_json(known), SOURCE_SLEEP_HOOK)
    except (KeyError, TypeError, ValueError):
        return None


def _instance_id(config: Config) -> str:
    value = _state(config).get("instance_id")
    return value if isinstance(value, str) else "unknown"
