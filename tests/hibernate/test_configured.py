"""`hibernation/configured`, which decides whether EC2's agent is in charge of a hibernation:
read at start, again soon while it is unknown, rarely once known."""

from __future__ import annotations

import time
from pathlib import Path

from spotwatch.clouds.aws.imds import ImdsClient
from spotwatch.config.schema import Config
from spotwatch.daemon.sleep import SleepWatch
from spotwatch.response.responder import Responder
from spotwatch.simulator.imds import ImdsSimulator
from spotwatch.state.ledger import HibernateLedger
from spotwatch.state.store import StateStore


def test_unknown_at_start_is_asked_again_soon(tmp_path: Path) -> None:
    """IMDS fails on hibernation/configured at start: the ledger stays unknown (the trigger
    then decides on the safe side); once IMDS answers, the next look after the retry pause
    learns it (before: not asked again for an hour)."""
    with ImdsSimulator() as sim:
        sim.set_path("meta-data/hibernation/configured", 500, "busy")
        client = ImdsClient(sim.endpoint, timeout=0.3)
        config = Config(state_dir=str(tmp_path))
        store = StateStore(str(tmp_path), boot_id="boot-1")
        store.load("i-1")
        ledger = HibernateLedger(str(tmp_path), boot_id="boot-1")
        watch = SleepWatch(
            lambda: config,
            lambda: client,
            store,
            ledger,
            Responder(lambda: config, lambda n, c: None),  # type: ignore[arg-type,return-value]
            rearm=lambda why: None,
            configured_retry=0.3,
        )
        watch.prepare()
        assert ledger.configured() is None
        sim.clear_path("meta-data/hibernation/configured")
        sim.set_hibernation_configured(True)
        watch.refresh_configured()  # too soon: not asked again yet
        assert ledger.configured() is None
        time.sleep(0.4)
        watch.refresh_configured()
        assert ledger.configured() is True
        client.close()
