"""SIGTERM, SIGINT and SIGHUP while the poll loop runs.

The handlers only set flags and wake the loop (a pipe write): no locks, no logging, no
Event.set() on the loop's side, any of which can deadlock against the interrupted main
thread. The loop does the work at its next turn. A second SIGTERM during the shutdown's
wait shortens it (`hurry.set()` is safe then: the main thread waits in the responder, not
holding that Event's lock).
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from types import FrameType
from typing import Dict, Iterator, Optional

from spotwatch.detection.watcher import Watcher


class StopAndReload:
    def __init__(self, watcher: Watcher, hurry: threading.Event) -> None:
        self.watcher = watcher
        self.hurry = hurry
        self.stop_signal: Optional[int] = None  # SIGTERM or SIGINT, once one came
        self.stopped_at: Optional[float] = None  # monotonic: the exit is due 90 s after it
        self.reload_requested = False  # SIGHUP came; the loop clears it once acted on

    def _stop(self, signum: int, _frame: Optional[FrameType]) -> None:
        if self.stop_signal is not None:
            self.hurry.set()
        else:
            self.stopped_at = time.monotonic()
        self.stop_signal = signum
        self.watcher.stop()

    def _reload(self, _signum: int, _frame: Optional[FrameType]) -> None:
        self.reload_requested = True
        self.watcher.poke()

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopAndReload]:
        """The handlers while the block runs; what was there before afterwards."""
        previous: Dict[int, object] = {}
        for signum, handler in (
            (signal.SIGTERM, self._stop),
            (signal.SIGINT, self._stop),
            (signal.SIGHUP, self._reload),
        ):
            previous[signum] = signal.signal(signum, handler)
        # A signal that lands on another thread (hooks, ECS, webhook) still ends the sleep.
        wakeup = signal.set_wakeup_fd(self.watcher.waker.write_fd, warn_on_full_buffer=False)
        try:
            yield self
        finally:
            signal.set_wakeup_fd(wakeup)
            for number, old in previous.items():
                signal.signal(number, old)  # type: ignore[arg-type]
