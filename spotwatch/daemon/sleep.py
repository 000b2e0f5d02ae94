"""The daemon's side of hibernation: resumes seen between polls, the resume hooks, whose
turn the hibernate hooks are, and the `hibernation/configured` fact the trigger relies on.

The systemd-sleep hook (`spotwatch sleep-hook`) is the other side; the two talk through
the hibernation ledger in the state directory (state/ledger.py).
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Optional, Tuple

from spotwatch.config.schema import Config
from spotwatch.detection.metadata import MetadataClient, MetadataError
from spotwatch.detection.notices import SOURCE_RESUME_DETECTED, Action, Notice, now_notice
from spotwatch.logevents import emit
from spotwatch.parts.hibernate import notice_key, skip_hooks
from spotwatch.response.plan import Plan
from spotwatch.response.responder import Responder
from spotwatch.state.ledger import BY_DAEMON, HibernateLedger
from spotwatch.state.store import StateStore

log = logging.getLogger("spotwatch.daemon")

HIBERNATION_CONFIGURED_PATH = "meta-data/hibernation/configured"
CONFIGURED_REFRESH = 3600.0  # re-read hibernation/configured this rarely once known
# ...and this soon while it is unknown: the trigger decides on the safe side meanwhile.
CONFIGURED_RETRY = 30.0
RESUME_JUMP = 1.0  # CLOCK_BOOTTIME gaining this much on CLOCK_MONOTONIC between polls = a sleep
RESUME: Action = "resume"  # also the resume hooks' record in the state file


def boot_and_monotonic() -> Tuple[float, float]:
    """(CLOCK_BOOTTIME, CLOCK_MONOTONIC): the first goes on while asleep, the second stops."""
    return time.clock_gettime(time.CLOCK_BOOTTIME), time.monotonic()


class SleepWatch:
    def __init__(
        self,
        config: Callable[[], Config],
        client: Callable[[], MetadataClient],
        store: StateStore,
        ledger: HibernateLedger,
        responder: Responder,
        *,
        rearm: Callable[[str], None],
        clock_pair: Callable[[], Tuple[float, float]] = boot_and_monotonic,
        configured_retry: float = CONFIGURED_RETRY,
    ) -> None:
        self._config = config
        self._configured_retry = configured_retry
        self._client = client
        self.store = store
        self.ledger = ledger
        self.responder = responder
        self._rearm = rearm  # closes the handled notices (they are new if they show again)
        self._clock_pair = clock_pair
        self._sleep_offset = 0.0  # CLOCK_BOOTTIME - CLOCK_MONOTONIC at the last look
        self._resumes_seen = 0  # the ledger's resume count when we last looked
        self._configured_due = 0.0  # monotonic: when to read hibernation/configured again

    def _relevant(self) -> bool:
        return self._config().hibernate.trigger == "auto"

    def prepare(self) -> None:
        """Baselines for resume detection; a resume the sleep hook handled while we were not
        running re-arms now; `hibernation/configured` is read once here, then rarely."""
        boot, mono = self._clock_pair()
        self._sleep_offset = boot - mono
        self._resumes_seen = self._ledger_resumes()
        stored = self.store.value("resume_generation")
        if isinstance(stored, int) and self._resumes_seen > stored:
            self._rearm("a resume handled by the sleep hook while the daemon was not running")
        self.store.set_value("resume_generation", self._resumes_seen)
        self.refresh_configured()

    def _ledger_resumes(self) -> int:
        try:
            return self.ledger.resumes()
        except OSError as failure:
            emit(log, logging.ERROR, "ledger-failed", f"hibernate ledger unusable: {failure}")
            return self._resumes_seen

    # ----------------------------------------------------------------- configured

    def refresh_configured(self) -> None:
        """Cache `hibernation/configured` in the ledger, where the trigger reads it; while
        it is unknown, ask again soon."""
        if not self._relevant() or time.monotonic() < self._configured_due:
            return
        config = self._config()
        value = self._read_configured(time.monotonic() + config.imds.timeout)
        known = value is not None
        self._configured_due = time.monotonic() + (
            CONFIGURED_REFRESH if known else self._configured_retry
        )
        if not known:
            return  # keep what we knew; unknown at start stays unknown (the safe side)
        try:
            changed = value != self.ledger.configured()
            if changed:
                self.ledger.set_configured(value)
        except OSError as failure:
            emit(log, logging.ERROR, "ledger-failed", f"hibernate ledger unusable: {failure}")
            return
        if changed:
            emit(
                log,
                logging.INFO,
                "hibernation-configured",
                f"IMDS hibernation/configured: {str(value).lower()}",
            )

    def _read_configured(self, deadline: float) -> Optional[bool]:
        try:
            reply = self._client().get(HIBERNATION_CONFIGURED_PATH, deadline=deadline)
        except MetadataError as failure:
            log.debug("hibernation/configured not read: %s", failure)
            return None
        if reply.status == 404:
            return False
        if reply.status == 200:
            return reply.body.strip().lower() == b"true"
        return None

    # ----------------------------------------------------------------- hibernate hooks

    def claim_hooks(self, notice: Notice, plan: Plan) -> None:
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

    # ----------------------------------------------------------------- resumes

    def check_resume(self) -> bool:
        """Between two polls: did the machine sleep? CLOCK_BOOTTIME gained on CLOCK_MONOTONIC
        (the time asleep), or the sleep hook's `post` recorded a resume. True: it did (the
        handled notices are closed and the caller should poll again at once)."""
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
                return False
            self._resumes_seen = self.ledger.resumes()
        except OSError as failure:
            emit(log, logging.ERROR, "ledger-failed", f"hibernate ledger unusable: {failure}")
            if slept <= RESUME_JUMP:
                return False
            run_hooks = True
        how = f"asleep for {slept:.1f} s" if slept > RESUME_JUMP else "the sleep hook saw it"
        emit(log, logging.WARNING, "resumed", f"resumed from sleep ({how})")
        # After a resume the old token may be gone with the old host: get a fresh one.
        self._client().resumed()
        self._rearm("resumed from hibernation")
        self.store.set_value("resume_generation", self._resumes_seen)
        if run_hooks and self._config().hooks_for(RESUME):
            notice = now_notice(RESUME, SOURCE_RESUME_DETECTED)
            self.responder.start(RESUME, RESUME, notice)
        return True
