"""One client's calls to one AWS service, waiting in line to be sent (spotwatch.response.aws).

A call joins with a ticket, (0 for the calls that matter most, else 1; order of arrival), and
is let go when it is first in line, the client's `Gate` has room for one more in flight and
its `Pacer` says the next call may go (spotwatch.response.retry: the policy, pure; here
the threads and the clock). A throttled call joins again with its old ticket: it keeps its
place, and the pacer's spacing is its backoff.
"""

from __future__ import annotations

import heapq
import random
import threading
import time
from typing import Callable, List, Optional, Tuple

from spotwatch.response.retry import Gate, Pacer

Ticket = Tuple[int, int]


class CallLine:
    def __init__(self, most_in_flight: int, seed: float) -> None:
        self.gate = Gate(most_in_flight)
        self.pacer = Pacer()
        self.ready = threading.Condition()  # guards everything here
        self._rng = random.Random(seed)  # the pacer's jitter
        self._waiting: List[Ticket] = []
        self._seq = 0

    def join(self, urgent: bool, seq: Optional[int] = None) -> Ticket:
        """A ticket; a call coming back passes its old `seq` to keep its place."""
        with self.ready:
            if seq is None:
                self._seq += 1
                seq = self._seq
            ticket = (0 if urgent else 1, seq)
            heapq.heappush(self._waiting, ticket)
            return ticket

    def enter(self, ticket: Ticket, room: Callable[[], float]) -> Optional[float]:
        """Waits until `ticket` may be sent and returns when it was (monotonic), counted in
        flight; None, out of line, once `room()` (seconds the call may still start in) is
        gone first."""
        with self.ready:
            while True:
                left = room()
                if left <= 0:
                    self._leave(ticket)
                    return None
                now = time.monotonic()
                wait = left
                if self._waiting[0] == ticket and self.gate.may_send():
                    ready = self.pacer.ready_at()
                    if ready <= now:
                        self._leave(ticket)
                        self.gate.sent()
                        self.pacer.sent(now, self._rng, len(self._waiting), left)
                        return now
                    wait = min(wait, ready - now)
                self.ready.wait(wait)

    def answered(self, throttled: bool, served: bool, sent_at: float) -> None:
        """An attempt let go at `sent_at` ended: served, throttled, or neither (a transient
        fault, which says nothing about the bucket)."""
        with self.ready:
            self.gate.answered(throttled)
            if throttled or served:
                self.pacer.answered(time.monotonic(), throttled, sent_at)
            self.ready.notify_all()

    def backoff_attempt(self, attempt: int) -> int:
        with self.ready:
            return self.gate.backoff_attempt(attempt)

    def _leave(self, ticket: Ticket) -> None:
        self._waiting.remove(ticket)
        heapq.heapify(self._waiting)
        self.ready.notify_all()  # the next in line may go now
