"""`spotwatch simulate-imds`: the IMDS simulator as a standalone server on 127.0.0.1."""

from __future__ import annotations

import signal
import sys
import time
from types import FrameType
from typing import Optional

from spotwatch.simulator.imds import ImdsSimulator


def serve(
    port: int = 0,
    action: Optional[str] = None,
    lead: Optional[float] = None,
    delay: float = 0.0,
    imdsv2_only: bool = True,
    asg_state: Optional[str] = None,
) -> None:
    """Run a simulator until SIGTERM or SIGINT (the ``simulate-imds`` command).

    Prints the endpoint alone on one stdout line once it accepts connections, so scripts can read
    it. With `action`, a notice is raised `lead` seconds ahead at start (default 120; hibernate 0).
    With `asg_state`, autoscaling/target-lifecycle-state answers it (else 404: in no group).
    """
    stop_requested = False

    def on_signal(signum: int, frame: Optional[FrameType]) -> None:
        nonlocal stop_requested
        stop_requested = True

    # A plain flag, not an Event: setting an Event from a signal handler can deadlock on its lock.
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        with ImdsSimulator(port=port, delay=delay, imdsv2_only=imdsv2_only) as sim:
            sim.set_asg_state(asg_state)
            if action:
                if lead is None:
                    lead = 0.0 if action == "hibernate" else 120.0
                sim.raise_notice(action, lead)
            sys.stdout.write(sim.endpoint + "\n")
            sys.stdout.flush()
            while not stop_requested:
                time.sleep(0.1)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
