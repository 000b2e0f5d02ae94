"""`spotwatch simulate-imds`: the IMDS simulator as a standalone server on 127.0.0.1."""

from __future__ import annotations

import signal
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from types import FrameType
from typing import List, Optional

from spotwatch.simulator.imds import ImdsSimulator
from spotwatch.simulator.scenario import Step, load_scenario, play


def serve(
    port: int = 0,
    action: Optional[str] = None,
    lead: Optional[float] = None,
    delay: float = 0.0,
    imdsv2_only: bool = True,
    *,
    scheduled_event: Optional[str] = None,
    answer_delay: float = 0.0,
    scenario: Optional[str] = None,
    asg_state: Optional[str] = None,
) -> None:
    """Run a simulator until SIGTERM or SIGINT (the ``simulate-imds`` command).

    Prints the endpoint alone on one stdout line once it accepts connections, so scripts can read
    it. With `action`, a notice is raised `delay` seconds after start, `lead` seconds ahead of
    then (default 120; hibernate 0; `rebalance`: a rebalance recommendation). With
    `scheduled_event`, an active event of that code is listed, NotBefore `lead` seconds ahead.
    `answer_delay` holds every answer that long; `scenario` plays a timeline file
    (simulator/scenario.py; ScenarioError for a bad one, before anything is served).
    With `asg_state`, autoscaling/target-lifecycle-state answers it (else 404: in no group).
    """
    steps: List[Step] = load_scenario(scenario) if scenario else []
    stop_requested = False

    def on_signal(signum: int, frame: Optional[FrameType]) -> None:
        nonlocal stop_requested
        stop_requested = True

    # A plain flag, not an Event: setting an Event from a signal handler can deadlock on its lock.
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    stop_playing = threading.Event()
    try:
        with ImdsSimulator(port=port, delay=answer_delay, imdsv2_only=imdsv2_only) as sim:
            sim.set_asg_state(asg_state)
            if lead is None:
                lead = 0.0 if action == "hibernate" else 120.0
            if scheduled_event:
                not_before = datetime.now(timezone.utc) + timedelta(seconds=lead)
                sim.scheduled.add(scheduled_event, not_before.replace(microsecond=0))
            player = threading.Thread(target=play, args=(sim, steps, stop_playing), daemon=True)
            player.start()
            sys.stdout.write(sim.endpoint + "\n")
            sys.stdout.flush()
            raise_at = time.monotonic() + delay if action else None
            while not stop_requested:
                if raise_at is not None and time.monotonic() >= raise_at:
                    assert action is not None
                    sim.raise_notice(action, lead)
                    raise_at = None
                time.sleep(0.1)
            stop_playing.set()
            player.join(1.0)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
