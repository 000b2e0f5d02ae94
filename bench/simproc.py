"""The IMDS simulator in a process of its own, driven over stdin/stdout with JSON lines.

    python -m bench.simproc        # prints {"endpoint": ...}, then answers one line per command

The benchmarks measure the CPU of the daemon under test; a simulator in the same process
would be counted with it (and would share its GIL). Commands (one JSON object per line):
`{"op": "count", "path": P}` requests answered for P (any method, any status);
`{"op": "raise", "action": A, "time": T}` set spot/instance-action (T: the IMDS time text);
`{"op": "clear"}`; `{"op": "rebalance", "time": T}` set the rebalance recommendation's
noticeTime (T null: withdraw it); `{"op": "log", "since": M}` the requests answered after
monotonic time M, as [monotonic, realtime, method, path, status] (realtime = the same moment
on the wall clock, to compare with what hooks write); `{"op": "quit"}`. raise, clear and
rebalance answer when they took effect: {"mono": monotonic, "real": wall clock}.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, Dict

from spotwatch.simulator.imds import ImdsSimulator


def _now() -> Dict[str, float]:
    return {"mono": time.monotonic(), "real": time.time()}


def handle(sim: ImdsSimulator, command: Dict[str, Any]) -> Dict[str, Any]:
    op = command.get("op")
    if op == "count":
        return {"count": sim.count(path=command.get("path"))}
    if op == "raise":
        sim.set_instance_action(command["action"], command.get("time"))
        return _now()
    if op == "clear":
        sim.clear_instance_action()
        return _now()
    if op == "rebalance":
        sim.set_rebalance(command.get("time"))
        return _now()
    if op == "log":
        since = float(command.get("since", 0.0))
        offset = time.time() - time.monotonic()
        rows = [
            [mono, mono + offset, method, path, status]
            for mono, method, path, status in sim.requests_log
            if mono > since
        ]
        return {"log": rows}
    if op == "reset":
        sim.reset_counters()
        return {}
    return {"error": f"unknown op {op!r}"}


def main() -> int:
    with ImdsSimulator() as sim:
        sim.set_hibernation_configured(False)
        print(json.dumps({"endpoint": sim.endpoint}), flush=True)
        for line in sys.stdin:
            command = json.loads(line)
            if command.get("op") == "quit":
                break
            print(json.dumps(handle(sim, command)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
