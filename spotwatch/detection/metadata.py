"""What every cloud's metadata client shares: one keep-alive connection, bounded requests,
and retries of transient failures that never outlast the caller's deadline.

Each cloud's client (clouds/<cloud>/) is a `MetadataClient` that says where its paths live
and which headers go with every request (AWS adds its IMDSv2 session token; Google and
Azure a header that proves the request was not redirected):

- One keep-alive connection through our own minimal HTTP/1.1 reader (`detection.http`): a
  poll costs a fraction of what `http.client` or `requests` cost in CPU, and the daemon does
  not pay `requests`' ~28 MB to import it.
- Transient failures (connect errors, timeouts, 429, 5xx) are retried with full-jitter
  backoff, but never past the caller's deadline, so a sick metadata service cannot delay the
  next poll. A set `cancel` event (the daemon is stopping) ends the retries at once.
"""

from __future__ import annotations

import logging
import math
import random
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Mapping, Optional, Tuple
from urllib.parse import urlsplit

from spotwatch import __version__
from spotwatch.detection.http import Connection, HttpError, Response, StaleConnection

log = logging.getLogger("spotwatch.imds")

MAX_BODY = 256 * 1024  # user data is at most 16 KB; anything far larger is no metadata answer
BACKOFF_BASE = 0.05
BACKOFF_CAP = 1.0
MIN_ATTEMPT = 0.02  # an attempt with less time than this left is not worth starting
MAX_VALUE = 256  # an id or a name longer than this is no id or name


class MetadataError(Exception):
    """The metadata service gave no usable answer before the deadline; `str()` says why."""


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-case names


class Transient(Exception):
    """A failure worth retrying (connection trouble, timeout, 429, 5xx)."""


class NoTimeLeft(Transient):
    """The poll's time ran out before an attempt could start: not a cause of its own."""


def is_transient_status(status: int) -> bool:
    return status == 429 or status >= 500


class MetadataClient:
    """Reads paths from one metadata service; see the module docstring for the rules.
    Subclasses say where paths live (`full_path`) and what each request carries
    (`request_headers`, or a whole `_get_once` of their own)."""

    def __init__(
        self,
        endpoint: str,
        *,
        timeout: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        cancel: Optional[threading.Event] = None,
    ) -> None:
        parts = urlsplit(endpoint)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"metadata endpoint must be http://host[:port], got {endpoint!r}")
        self.endpoint = endpoint
        self.timeout = timeout
        self._clock = clock
        # Set when the daemon stops: a poll stuck in retries gives up at once.
        self._cancel = cancel or threading.Event()
        self._conn = Connection(parts.hostname, parts.port or 80)
        self._agent = f"spotwatch/{__version__}"
        self.requests = 0  # HTTP requests sent, for metrics and benchmarks

    # ----------------------------------------------------------------- what a cloud says

    def full_path(self, path: str) -> str:
        """The request path for `path` as callers name it."""
        return path

    def request_headers(self) -> Dict[str, str]:
        """Headers every request carries besides User-Agent."""
        return {}

    def check_answer(self, response: Response) -> None:
        """Raise `Transient` for an answer that must not be believed (default: none)."""

    # ----------------------------------------------------------------- public surface

    def get(self, path: str, *, deadline: Optional[float] = None) -> Reply:
        """GET `path`; any status the service answers that is not transient is returned.

        `deadline` is on the client's monotonic clock; default: one `timeout` from now plus
        retries worth one more. Raises `MetadataError` when no answer came in time.
        """
        end = self._clock() + 2 * self.timeout if deadline is None else deadline
        return self._with_retries(path, end, lambda full: self._get_once(full, end))

    def send(
        self, method: str, path: str, body: bytes, *, deadline: Optional[float] = None
    ) -> Reply:
        """One request with a body (e.g. a POST), retried like `get`."""

        end = self._clock() + 2 * self.timeout if deadline is None else deadline

        def once(full: str) -> Reply:
            headers = {**self.request_headers(), "Content-Type": "application/json"}
            return self._reply(self._request(method, full, headers, end, body=body))

        return self._with_retries(path, end, once)

    def read_text(self, path: str, deadline: float) -> Tuple[Optional[str], str]:
        """A short text value (an id, a name): (its stripped text, "") when the service
        answers 200 with one before `deadline` (the client's clock), else (None, why not)."""
        try:
            reply = self.get(path, deadline=deadline)
        except MetadataError as failure:
            return None, str(failure)
        text = reply.body.decode("utf-8", "replace").strip()
        where = self.full_path(path)
        if reply.status != 200:
            return None, f"{where} answered HTTP {reply.status}"
        if not text or len(text) > MAX_VALUE:
            return None, f"{where} answered {len(text)} characters"
        return text, ""

    def now(self) -> float:
        """The client's monotonic clock, on which deadlines are given."""
        return self._clock()

    def close(self) -> None:
        self._conn.close()

    def resumed(self) -> None:
        """After a resume from sleep: drop what the old host may have forgotten (the kept
        connection; AWS's client also its session token)."""
        self.close()

    def abort(self) -> None:
        """Wake a request blocked on this client's connection from another thread (it then
        fails as a broken connection). Used to stop a thread waiting in a long request."""
        self._conn.abort()

    # ----------------------------------------------------------------- internals

    def _with_retries(self, path: str, deadline: float, once: Callable[[str], Reply]) -> Reply:
        full_path = self.full_path(path)
        attempt = 0
        cause: Optional[Transient] = None
        while True:
            try:
                return once(full_path)
            except Transient as failure:
                # A retry that woke too late to start says nothing new: the outage is still
                # the failure before it (one cause, one log line, however loaded the host).
                if cause is None or not isinstance(failure, NoTimeLeft):
                    cause = failure
                failure = cause
                attempt += 1
                pause = random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt))
                if self._clock() + pause + MIN_ATTEMPT >= deadline:
                    # The attempt count stays out of the message: repeats must read the same.
                    log.debug("%s: giving up after %d attempts", full_path, attempt)
                    raise MetadataError(f"{full_path}: {failure}") from None
                log.debug("%s: %s; retrying in %.0f ms", full_path, failure, pause * 1000)
                if self._cancel.wait(pause):
                    raise MetadataError(f"{full_path}: {failure} (stopping)") from None

    def _get_once(self, full_path: str, deadline: float) -> Reply:
        return self._reply(self._request("GET", full_path, self.request_headers(), deadline))

    def _reply(self, response: Response) -> Reply:
        if is_transient_status(response.status):
            raise Transient(f"HTTP {response.status}")
        self.check_answer(response)
        return Reply(response.status, response.body, response.headers)

    def _request(
        self,
        method: str,
        path: str,
        headers: Dict[str, str],
        deadline: float,
        *,
        body: bytes = b"",
        budget: Optional[float] = None,
    ) -> Response:
        """One exchange, bounded by `budget` (default: the client's timeout) and the deadline.
        Raises `Transient` for connection trouble."""
        limit = self.timeout if budget is None else budget
        left = min(limit, deadline - self._clock())
        if left < MIN_ATTEMPT:
            raise NoTimeLeft("no time left in this poll")
        headers = {"User-Agent": self._agent, **headers}
        try:
            return self._exchange(method, path, headers, left, body)
        except StaleConnection as failure:
            # The service may close an idle keep-alive connection between polls: that is no
            # failure, so reconnect at once instead of backing off, with the time still left.
            self.close()
            left = min(limit, deadline - self._clock())
            if left < MIN_ATTEMPT:
                raise Transient(describe(failure)) from None
            try:
                return self._exchange(method, path, headers, left, body)
            except OSError as again:
                self.close()
                raise Transient(describe(again)) from None
        except OSError as failure:
            self.close()
            raise Transient(describe(failure)) from None

    def _exchange(
        self, method: str, path: str, headers: Dict[str, str], budget: float, body: bytes
    ) -> Response:
        self.requests += 1
        return self._conn.request(method, path, headers, budget, MAX_BODY, body=body)


def seconds_header(header: Optional[str]) -> Optional[float]:
    """A header's number of seconds, or None when absent or not a finite number."""
    if header is None:
        return None
    try:
        value = float(header)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def describe(failure: BaseException) -> str:
    if isinstance(failure, socket.timeout):
        return "timed out"
    if isinstance(failure, ConnectionRefusedError):
        return "connection refused"
    if isinstance(failure, ConnectionResetError):
        return "connection reset"
    if isinstance(failure, HttpError):
        return str(failure) or "connection closed without an answer"
    text = str(failure) or type(failure).__name__
    return text[:200]
