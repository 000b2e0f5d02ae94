"""`spotwatch sleep-hook pre|post ACTION`: called by systemd-sleep.

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

Both run with SPOTWATCH_SOURCE=sleep-hook through the one `Responder` (so their deadlines
follow the one rule: `pre`'s hooks share what is left of `hibernate.budget`, `resume` hooks
each get their timeout), the whole run is bounded by `hibernate.budget` — user data's when
it sets one, as for the daemon — (plus the SIGTERM grace a cut hook gets) from the moment
systemd called us, and it always exits 0: failing here must never block sleep.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from typing import Dict, Optional

from spotwatch.clouds.registry import settle
from spotwatch.commands.settings import load_service_config
from spotwatch.config.schema import Config
from spotwatch.daemon.wiring import aws_clients
from spotwatch.detection.identity import UNKNOWN
from spotwatch.detection.notices import SOURCE_SLEEP_HOOK, Notice, now_notice
from spotwatch.host import logs
from spotwatch.logevents import emit
from spotwatch.parts.hibernate import hooks_plan
from spotwatch.parts.presetservices import DaemonServices
from spotwatch.response.deadline import KILL_GRACE
from spotwatch.response.responder import Facts, Responder
from spotwatch.response.runner import summarize
from spotwatch.state.ledger import BY_SLEEP_HOOK, HibernateLedger
from spotwatch.state.reader import known_notices, read_state

log = logging.getLogger("spotwatch.sleephook")

WAIT_SLICE = 0.05
EXIT_SLACK = 1.0


def run_sleep_hook(path: Optional[str], phase: str, action: str) -> int:
    """Everything is caught: the answer to systemd is always 0."""
    started = time.monotonic()
    try:
        logs.configure()
        if action != "hibernate" or phase not in ("pre", "post"):
            log.debug("sleep-hook %s %s: nothing to do", phase, action)
            return 0
        # The file config alone (no IMDS) says how long we may take until the worker has
        # read user data, which may set another `hibernate.budget`: from then on, that one.
        budget = Budget(load_service_config(path, with_user_data=False).hibernate.budget)
        worker = threading.Thread(
            target=_guarded, args=(path, phase, started, budget), name="sleep-hook", daemon=True
        )
        worker.start()
        # Never hold up sleep for longer than the budget (and the grace a cut hook gets).
        while worker.is_alive():
            left = started + budget.seconds + KILL_GRACE + EXIT_SLACK - time.monotonic()
            if left <= 0:
                break
            worker.join(min(left, WAIT_SLICE))
        if worker.is_alive():
            emit(log, logging.ERROR, "sleep-hook", f"sleep-hook {phase}: out of time; exiting")
    except BaseException as failure:
        emit(log, logging.ERROR, "sleep-hook", f"sleep-hook {phase} {action} failed: {failure!r}")
    return 0


class Budget:
    """`hibernate.budget` as known so far: the file's, then the effective config's (user
    data included) once the worker has read it."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds


def _guarded(path: Optional[str], phase: str, started: float, budget: Budget) -> None:
    try:
        config = load_service_config(path)
        budget.seconds = config.hibernate.budget
        logs.configure(config.log.level, config.log.format)
        if phase == "pre":
            before_sleep(config, started)
        else:
            after_resume(config)
    except Exception:
        log.exception("sleep-hook %s failed", phase)


def before_sleep(config: Config, started: Optional[float] = None) -> None:
    started = time.monotonic() if started is None else started
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
        # What is left of the budget is the hooks' deadline: the config's hibernate.budget,
        # shortened by the time spent loading it.
        left = replace(config.hibernate, budget=max(0.0, end_by - time.monotonic()))
        _run(replace(config, hibernate=left), notice)
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
    _run(config, now_notice("resume", SOURCE_SLEEP_HOOK))


def _run(config: Config, notice: Notice) -> None:
    """The hooks for `notice`, through the one responder (no record: the ledger is ours)."""
    if not config.hooks_for(notice.action):
        return
    settled = settle(config)
    cloud = settled.cloud.name
    instance_id = _instance_id(config)
    services = DaemonServices(aws_clients(config), lambda: settled.cloud.node_name(config))
    responder = Responder(
        lambda: config,
        lambda n, c: hooks_plan(n, c.hooks_for(n.action), services),
        facts=lambda: Facts(instance_id, config.dry_run, cloud),
    )
    response = responder.start("sleep-hook", "sleep-hook", notice, background=False)
    emit(
        log,
        logging.INFO,
        "sleep-hook",
        "hooks ended: " + ", ".join(summarize(response.runner.outcomes)),
    )


def _current_notice(config: Config) -> Optional[Notice]:
    """The hibernate notice the daemon knows, if any (for SPOTWATCH_NOTICE_TIME)."""
    for known in known_notices(read_state(config.state_dir)).values():
        if known.action == "hibernate":
            return replace(known, source=SOURCE_SLEEP_HOOK)
    return None


def _instance_id(config: Config) -> str:
    """From the daemon's state, else from the metadata service (briefly: sleep is waiting)."""
    state = read_state(config.state_dir)
    value = state.get("instance_id") if state is not None else None
    if isinstance(value, str) and value:
        return value
    settled = settle(config)
    client = settled.cloud.client(settled.config)
    try:
        found, _ = settled.cloud.instance_id(client, client.now() + client.timeout)
    finally:
        client.close()
    return found or UNKNOWN
