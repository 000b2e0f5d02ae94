"""The first start of a new boot after spotwatch handled a stop, a reboot or an unresumed
hibernation on an earlier boot of this instance: the `start` hooks run once.

The boot is told by `/proc/sys/kernel/random/boot_id`, which the state file records; the
earlier boot's records are kept under `previous` (state/store.py, state/history.py). The
`start` response has a record of its own in this boot's state file, so a restart of the
daemon on the same boot never runs it twice (an interrupted one is finished, not redone).
Its notice time is the earlier notice's time.
"""

from __future__ import annotations

import logging
from typing import Callable, Optional

from spotwatch.daemon.shell import Daemon
from spotwatch.detection.notices import SOURCE_INSTANCE_START, Notice, parse_utc_time
from spotwatch.logevents import emit
from spotwatch.response.responder import Responder
from spotwatch.state.history import boot_ending_record
from spotwatch.state.store import StateStore

log = logging.getLogger("spotwatch.daemon")

START_KEY = "start"  # its tracker and record name: one per boot
# The boot whose start response has begun: ended records are pruned in time, this is not.
STARTED_BOOT = "start_boot"


def start_notice(store: StateStore, instance_id: Optional[str]) -> Optional[Notice]:
    """The `start` notice this boot owes, if any."""
    earlier = boot_ending_record(store.value("previous"), store.boot_id, instance_id)
    if earlier is None:
        return None
    time_text = str(earlier["notice"].get("time") or "")
    moment = parse_utc_time(time_text)
    if moment is None:
        return None
    return Notice("start", moment, time_text, SOURCE_INSTANCE_START)


def run_start_hooks(
    store: StateStore,
    responder: Responder,
    instance_id: Optional[str],
    label: Callable[[Notice], Notice] = lambda notice: notice,
) -> None:
    """At daemon start, after the state is loaded: the start response, once per boot
    (`label`: how the intake labels notices: a rehearsal's say "rehearsal")."""
    record = store.response(START_KEY)
    begun = store.value(STARTED_BOOT) == store.boot_id
    if begun and (record is None or record.get("done")):
        return
    notice = start_notice(store, instance_id)
    if notice is None:
        return
    emit(
        log,
        logging.WARNING,
        "instance-start",
        f"first start after the instance went away ({notice.time_text}): running start hooks",
        action="start",
        notice_time=notice.time_text,
    )
    resume = begun and record is not None
    responder.start(START_KEY, START_KEY, label(notice), resume=resume)
    store.set_value(STARTED_BOOT, store.boot_id)


def on_daemon_start(daemon: Daemon) -> None:
    """A `DaemonParts.on_start` callback (daemon/wiring.py)."""
    run_start_hooks(daemon.store, daemon.responder, daemon.instance_id, daemon.intake.labelled)
