"""One client's calls to one AWS service, waiting in line to be sent (awsapi/clients.py).

AWS throttles with token buckets that are not one per service: ECS has one per category of
actions (StopTask shares UpdateContainerInstancesState's, not ListTasks'; see
spotwatch.parts.awsapi.buckets). So each bucket has its own line and its own `Pacer`: StopTask
throttled in the stop step says nothing about ListTasks, and must not hold back the final
stop's ListTasks (it did, with one pacer per service: bench/storm.py, docs/benchmarks.md
"Storm"). The client's `Gate` (how many calls in flight) is one for the service. A call joins
its bucket's line with a ticket (0 for the calls that matter most, else 1; order of
arrival) and is let go when it is first in that line, the gate has room and the bucket's
pacer says the next call may go (spotwatch.parts.awsapi.retry: the policy, pure; here the
threads and the clock). A throttled call joins again with its old ticket: it keeps its
place, and the pacer's spacing is its backoff.
"""

from __future__ import annotations

import heapq
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple

from spotwatch.parts.awsapi.retry import Gate, Pacer


class Ticket(NamedTuple):
    bucket: str  # spotwatch.parts.awsapi.buckets.bucket_of
    rank: int  # 0: a call that matters most; 1: the others
    seq: int  # order of arrival


@dataclass
class _BucketLine:
    pacer: Pacer = field(default_factory=Pacer)
    waiting: List[Tuple[int, int]] = field(default_factory=list)  # heap of (rank, seq)


class CallLine:
    def __init__(self, most_in_flight: int, seed: float) -> None:
        self.gate = Gate(most_in_flight)
        self.ready = threading.Condition()  # guards everything here
        self._rng = random.Random(seed)  # the pacers' jitter
        self._buckets: Dict[str, _BucketLine] = {}
        self._seq = 0

    def join(self, bucket: str, urgent: bool) -> Ticket:
        with self.ready:
            self._seq += 1
            ticket = Ticket(bucket, 0 if urgent else 1, self._seq)
            self._push(ticket)
            return ticket

    def rejoin(self, ticket: Ticket) -> None:
        """A call coming back (throttled, or after a backoff) keeps its place."""
        with self.ready:
            self._push(ticket)

    def enter(self, ticket: Ticket, room: Callable[[], float]) -> Optional[float]:
        """Waits until `ticket` may be sent and returns when it was (monotonic), counted in
        flight; None, out of line, once `room()` (seconds the call may still start in) is
        gone first."""
        line = self._bucket(ticket.bucket)
        place = (ticket.rank, ticket.seq)
        with self.ready:
            try:
                while True:
                    left = room()
                    if left <= 0:
                        self._leave(line, place)
                        return None
                    now = time.monotonic()
                    wait = left
                    if line.waiting[0] == place and self.gate.may_send():
                        ready = line.pacer.ready_at(len(line.waiting), left)
                        if ready <= now:
                            self._leave(line, place)
                            self.gate.sent()
                            line.pacer.sent(now, self._rng)
                            return now
                        wait = min(wait, ready - now)
                    self.ready.wait(wait)
            except BaseException:
                # A ticket never outlives its call: one left first in line would hold every
                # later call to its bucket until their bounds, for good.
                if place in line.waiting:
                    self._leave(line, place)
                raise

    def answered(self, ticket: Ticket, throttled: bool, served: bool, sent_at: float) -> None:
        """An attempt let go at `sent_at` ended: served, throttled, or neither (a transient
        fault, which says nothing about the bucket)."""
        with self.ready:
            self.gate.answered(throttled)
            if throttled or served:
                pacer = self._bucket(ticket.bucket).pacer
                pacer.answered(time.monotonic(), throttled, sent_at)
            self.ready.notify_all()

    def backoff_attempt(self, attempt: int) -> int:
        with self.ready:
            return self.gate.backoff_attempt(attempt)

    def _bucket(self, bucket: str) -> _BucketLine:
        with self.ready:
            found = self._buckets.get(bucket)
            if found is None:
                found = self._buckets[bucket] = _BucketLine()
            return found

    def _push(self, ticket: Ticket) -> None:
        heapq.heappush(self._bucket(ticket.bucket).waiting, (ticket.rank, ticket.seq))
        self.ready.notify_all()  # a longer line may shorten the pacer's spacing

    def _leave(self, line: _BucketLine, place: Tuple[int, int]) -> None:
        line.waiting.remove(place)
        heapq.heapify(line.waiting)
        self.ready.notify_all()  # the next in line may go now
