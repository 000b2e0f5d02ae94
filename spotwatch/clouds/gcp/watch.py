"""One metadata value followed with the hanging GET, beside the poll loop.

Why a thread: the hanging GET waits up to `timeout_sec` for a change. Done inside the poll
loop it would hold every other monitor, the watchdog, reloads and shutdown for that long;
on a thread of its own (and a connection of its own) it holds nothing. When the value
changes, the server answers at once, the thread stores the value and wakes the poll loop,
and the poll sees the change within milliseconds, at any `poll_interval`.

The value it holds is trusted while the watch is healthy and its last answer is recent: a
hanging request returns within its `timeout_sec` (at most `poll_interval`), so an answer
older than that plus the client's timeout means the watch is stuck, and the monitor reads
the value itself, every `poll_interval`, as it does while the watch fails. A failed watch
tries again after `retry` seconds, keeping the last ETag: a change made meanwhile is
answered at once when it is back.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Optional

from spotwatch.clouds.gcp.metadata import GcpClient
from spotwatch.detection.metadata import MetadataError, is_transient_status
from spotwatch.logevents import RepeatFilter

log = logging.getLogger("spotwatch.watcher")

FRESH_SLACK = 0.5  # seconds beyond the wait and the timeout before an answer counts as old
# A 503 (the server's maintenance: under a second) or 429 is asked again after this pause,
# quietly, up to this many times in a row before it counts as a failure.
TRANSIENT_PAUSE = 0.2
TRANSIENT_IN_A_ROW = 5


class ValueWatch:
    def __init__(
        self,
        client: GcpClient,
        path: str,
        wait: int,
        wake: Callable[[], None],
        *,
        retry: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self.path = path
        self._wait = wait  # timeout_sec of each hanging GET
        self._wake = wake
        self._retry = retry
        self._clock = clock
        self._fresh_for = wait + client.timeout + FRESH_SLACK
        self._lock = threading.Lock()
        self._value: Optional[str] = None
        self._at = float("-inf")  # monotonic time of the last answer
        self._healthy = False
        self._stop = threading.Event()
        self._failures = RepeatFilter(log, "gcp-watch-failed")
        self._transient = 0  # transient answers in a row
        self._thread = threading.Thread(target=self._run, name=f"watch:{path}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """End the watch now, even in the middle of a hanging GET."""
        self._stop.set()
        self._client.abort()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def current(self) -> Optional[str]:
        """The value while the watch vouches for it, else None (read it yourself)."""
        with self._lock:
            fresh = self._healthy and self._clock() - self._at <= self._fresh_for
            return self._value if fresh else None

    def _run(self) -> None:
        etag: Optional[str] = None
        try:
            while not self._stop.is_set():
                etag = self._once(etag)
        finally:
            self._client.close()

    def _once(self, etag: Optional[str]) -> Optional[str]:
        """One read (plain while no ETag is known, else hanging); the ETag to wait on next."""
        try:
            if etag is None:
                reply = self._client.get(self.path)
            else:
                reply = self._client.wait_for_change(self.path, etag, self._wait)
        except MetadataError as failure:
            return self._failed(str(failure), etag)
        if is_transient_status(reply.status) and self._transient < TRANSIENT_IN_A_ROW:
            self._transient += 1
            self._stop.wait(TRANSIENT_PAUSE)
            return etag
        self._transient = 0
        tag = reply.headers.get("etag")
        if reply.status != 200 or not tag:
            why = f"answered HTTP {reply.status}" if reply.status != 200 else "sent no ETag"
            return self._failed(f"{self.path} {why}", etag)
        value = reply.body.decode("utf-8", "replace").strip()
        with self._lock:
            changed = value != self._value
            self._value, self._at, self._healthy = value, self._clock(), True
        self._failures.recovered(f"watching {self.path} again")
        if changed:
            self._wake()
        return tag

    def _failed(self, why: str, etag: Optional[str]) -> Optional[str]:
        with self._lock:
            self._healthy = False
        if not self._stop.is_set():
            self._failures.failure(
                f"hanging GET of {self.path} failed ({why}); reading it every poll meanwhile",
                key=why.split(":", 1)[0],
            )
        self._stop.wait(self._retry)
        return etag
