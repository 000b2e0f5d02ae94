"""`spotwatch simulate-imds`: a cloud's metadata simulator as a standalone server on 127.0.0.1
(`--cloud`; AWS's IMDS by default, the registry's fallback)."""

from __future__ import annotations

import signal
import sys
import threading
import time
from types import FrameType
from typing import Optional

from spotwatch.clouds.cloud import SimulateRequest


def serve(request: SimulateRequest, cloud: Optional[str] = None) -> None:
    """Run a simulator until SIGTERM or SIGINT (the ``simulate-imds`` command).

    Prints the endpoint alone on one stdout line once it accepts connections, so scripts can
    read it. What is there from the start, the signal raised `delay` seconds after it, and a
    scenario are the cloud's (`Cloud.simulation`); ValueError (ScenarioError among them) for
    an option the cloud has no use for or a bad scenario, before anything is served.
    """
    from spotwatch.clouds.registry import CLOUDS, FALLBACK

    simulation = (CLOUDS[cloud] if cloud else FALLBACK).simulation(request)
    stop_requested = False

    def on_signal(signum: int, frame: Optional[FrameType]) -> None:
        nonlocal stop_requested
        stop_requested = True

    # A plain flag, not an Event: setting an Event from a signal handler can deadlock on its lock.
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    stop_playing = threading.Event()
    try:
        with simulation.service as sim:
            simulation.setup()
            player = None
            if simulation.play is not None:
                player = threading.Thread(target=simulation.play, args=(stop_playing,), daemon=True)
                player.start()
            sys.stdout.write(sim.endpoint + "\n")
            sys.stdout.flush()
            raise_at = time.monotonic() + request.delay if simulation.raise_notice else None
            while not stop_requested:
                if raise_at is not None and time.monotonic() >= raise_at:
                    assert simulation.raise_notice is not None
                    simulation.raise_notice()
                    raise_at = None
                time.sleep(0.1)
            stop_playing.set()
            if player is not None:
                player.join(1.0)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
