"""SIGTERM, SIGINT and SIGHUP while the poll loop runs.

The handlers only set flags and wake the loop (a pipe write): no locks, no logging, no
Event.set() on the loop's side, any of which can deadlock against the interrupted main
thread. The loop does the work at its next turn. A second SIGTERM during the shutdown's
wait shortens it (`hurry.set()` is safe then: the main thread waits in the responder, not
holding that Event's lock).

Where the process ends with the block (`spotwatch run`), the three signals are ignored from
its end on: the default disposition they had before would kill a process that is already
on its way out (a second SIGTERM while the interpreter exits: status 143, not 0).
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
    """Installed before the daemon prepares (state, trackers, a cloud's watch that may start
    at once), so no signal meets a default disposition that kills the process: one that
    comes before the poll loop is attached acts on it when it is."""

    def __init__(self, hurry: threading.Event) -> None:
        self.watcher: Optional[Watcher] = None  # the poll loop, once attached
        self.hurry = hurry
        self.stop_signal: Optional[int] = None  # SIGTERM or SIGINT, once one came
        self.stopped_at: Optional[float] = None  # monotonic: the exit is due 90 s after it
        self.reload_requested = False  # SIGHUP came; the loop clears it once acted on
        self._wakeup: Optional[int] = None  # the wakeup fd before attach(), to put back

    def _stop(self, signum: int, _frame: Optional[FrameType]) -> None:
        if self.stop_signal is not None:
            self.hurry.set()
        else:
            self.stopped_at = time.monotonic()
        self.stop_signal = signum
        if self.watcher is not None:
            self.watcher.stop()

    def _reload(self, _signum: int, _frame: Optional[FrameType]) -> None:
        self.reload_requested = True
        if self.watcher is not None:
            self.watcher.poke()

    def attach(self, watcher: Watcher) -> None:
        """The poll loop the signals act on from now; one that came before acts now."""
        # A signal that lands on another thread (hooks, ECS, webhook) still ends the sleep.
        self._wakeup = signal.set_wakeup_fd(watcher.waker.write_fd, warn_on_full_buffer=False)
        self.watcher = watcher
        if self.stop_signal is not None:  # a second stop() is harmless
            watcher.stop()
        elif self.reload_requested:
            watcher.poke()

    @contextlib.contextmanager
    def installed(self, *, process_ends: bool = False) -> Iterator[StopAndReload]:
        """The handlers while the block runs; what was there before afterwards, or, when
        `process_ends` (nothing runs after the block but the interpreter's exit), SIG_IGN:
        nothing is left to stop or reload, and the exit status stays the block's."""
        previous: Dict[int, object] = {}
        for signum, handler in (
            (signal.SIGTERM, self._stop),
            (signal.SIGINT, self._stop),
            (signal.SIGHUP, self._reload),
        ):
            previous[signum] = signal.signal(signum, handler)
        try:
            yield self
        finally:
            if self._wakeup is not None:
                signal.set_wakeup_fd(self._wakeup)
            for number, old in previous.items():
                after = signal.SIG_IGN if process_ends else old
                signal.signal(number, after)  # type: ignore[arg-type]
