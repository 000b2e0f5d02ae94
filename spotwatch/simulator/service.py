"""What every simulated metadata service shares: a real HTTP server on 127.0.0.1 that can be
stopped and started again on the same port (an outage and its recovery), injected faults
(error statuses, hangs, resets) per path prefix, and exact request counts.

Each simulator (the IMDS in simulator/imds.py, Google's and Azure's metadata servers in
clouds/gcp and clouds/azure) says how it answers one request (`answer`). Standard library
only and no imports from the rest of spotwatch, so a simulator can never share a bug with
the code it is used to test.
"""

import collections
import threading
import time
from types import TracebackType
from typing import Deque, List, Optional, Set, Tuple, Type, TypeVar

from spotwatch.simulator.http import Answer, Fault, FaultPlan, Request, Server

# (monotonic time, method, path, status); status 0 means the connection was reset unanswered.
LogEntry = Tuple[float, str, str, int]
Self = TypeVar("Self", bound="SimulatedService")


class SimulatedService:
    """A metadata service on 127.0.0.1 whose answers and faults the caller controls.

    Every setter takes effect for the next request. State sits behind one lock (`_lock`);
    each request computes its whole answer under it, so it sees one consistent snapshot.
    """

    kind = "metadata-simulator"  # names the server's thread
    instance_id = ""  # the id the simulated VM answers

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, *, delay: float = 0.0, verbose: bool = False
    ) -> None:
        self.host = host
        self.delay = delay  # every answer is held this long
        self.verbose = verbose
        self._port = port
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: Optional[Server] = None
        self._thread: Optional[threading.Thread] = None
        self._faults: List[Fault] = []
        self._log: Deque[LogEntry] = collections.deque(maxlen=100_000)
        # Counted apart from the bounded log, so counts stay exact however long a test runs.
        self._counts: collections.Counter[Tuple[str, str, int]] = collections.Counter()

    def answer(self, request: Request) -> Answer:
        """One request's answer; may block (a hanging GET) until `_stopping` is set."""
        raise NotImplementedError

    # --- lifecycle -------------------------------------------------------------------------

    def start(self: Self) -> Self:
        """Bind and serve in a daemon thread. After stop(), start() serves again on the same
        port; state and counters are kept."""
        if self._server is not None:
            raise RuntimeError(f"{type(self).__name__} is already running")
        self._stopping.clear()
        server = Server((self.host, self._port), self)
        self._port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},  # bounds how long stop() waits for the loop
            name=f"{self.kind}-{self._port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close the listening socket and every open connection. Idempotent."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._server = self._thread = None
        self._stopping.set()  # wakes handlers sleeping in a hang, a delay or a hanging GET
        self.stopping()
        server.shutdown()
        server.close_connections()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def stopping(self) -> None:
        """Wake whatever waits inside `answer` (a simulator with hanging GETs overrides it)."""

    def __enter__(self: Self) -> Self:
        # Tolerates `with Simulator().start() as sim:`, a common way to write it.
        return self if self._server is not None else self.start()

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._port == 0:
            raise RuntimeError(f"{type(self).__name__} has no port until start()")
        return self._port

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    # --- faults ----------------------------------------------------------------------------

    def inject_status(self, status: int, *, path: str = "", count: Optional[int] = 1) -> None:
        """Answer `status` to the next `count` requests under `path` (None: until cleared)."""
        self._add_fault(Fault("status", path, count, status=status))

    def inject_hang(self, seconds: float, *, path: str = "", count: Optional[int] = 1) -> None:
        """Wait `seconds` before answering the next `count` requests under `path`."""
        self._add_fault(Fault("hang", path, count, seconds=seconds))

    def inject_reset(self, *, path: str = "", count: Optional[int] = 1) -> None:
        """Drop the connection with a RST, unanswered, for the next `count` requests."""
        self._add_fault(Fault("reset", path, count))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _add_fault(self, fault: Fault) -> None:
        if fault.remaining is not None and fault.remaining <= 0:
            return
        with self._lock:
            self._faults.append(fault)

    def _take_faults(self, path: str) -> FaultPlan:
        """Consume, for one request, the first matching fault of each kind (oldest first), so
        a hang and a status can combine. A reset wins over a status."""
        plan = FaultPlan()
        seen: Set[str] = set()
        with self._lock:
            for fault in list(self._faults):
                if fault.kind in seen or not path.startswith(fault.path):
                    continue
                seen.add(fault.kind)
                if fault.kind == "hang":
                    plan.hang = fault.seconds
                elif fault.kind == "reset":
                    plan.reset = True
                else:
                    plan.status = fault.status
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
        return plan

    # --- counters --------------------------------------------------------------------------

    def count(
        self,
        method: Optional[str] = None,
        path: Optional[str] = None,
        status: Optional[int] = None,
    ) -> int:
        """Requests answered so far that match every given filter (path: exact, no query).
        Resets count with status 0."""
        with self._lock:
            return sum(
                n
                for (m, p, s), n in self._counts.items()
                if (method is None or m == method.upper())
                and (path is None or p == path)
                and (status is None or s == status)
            )

    @property
    def requests_log(self) -> List[LogEntry]:
        """The last 100 000 requests as (monotonic time, method, path, status); a copy."""
        with self._lock:
            return list(self._log)

    def reset_counters(self) -> None:
        with self._lock:
            self._log.clear()
            self._counts.clear()

    def _record(self, method: str, path: str, status: int) -> None:
        with self._lock:
            self._log.append((time.monotonic(), method, path, status))
            self._counts[(method, path, status)] += 1
