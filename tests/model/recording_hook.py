"""A checkpoint hook for the model's sequences: `recording_hook.py NAME SECONDS OUT`.

Appends one JSON line when it starts (its SPOTWATCH_* environment with it) and one when it
ends, `SECONDS` later or when SIGTERM cuts it short (then with the signal), to OUT. Each
line is one write to a file opened for appending, so lines of hooks running at once never
mix. Standard library only (run with `python -S`).
"""

import json
import os
import signal
import sys
import time


def note(out: str, line: dict) -> None:
    fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (json.dumps(line) + "\n").encode())
    finally:
        os.close(fd)


def main() -> None:
    name, seconds, out = sys.argv[1], float(sys.argv[2]), sys.argv[3]
    env = {k: v for k, v in os.environ.items() if k.startswith("SPOTWATCH_")}

    def stopped(signum: int, _frame: object) -> None:  # cut short (the daemon's shutdown)
        note(out, {"hook": name, "phase": "end", "t": time.time(), "pid": os.getpid(),
                   "signal": signum})  # fmt: skip
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, stopped)
    note(out, {"hook": name, "phase": "start", "t": time.time(), "pid": os.getpid(), "env": env})
    time.sleep(seconds)
    note(out, {"hook": name, "phase": "end", "t": time.time(), "pid": os.getpid()})


if __name__ == "__main__":
    main()
