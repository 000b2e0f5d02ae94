"""A small IMDSv2 client built for polling every few seconds for weeks.

- One keep-alive connection through our own minimal HTTP/1.1 reader (`detection.http`): a
  poll costs a fraction of what `http.client` or `requests` cost in CPU, and the daemon does
  not pay `requests`' ~28 MB to import it.
- The session token is reused until shortly before it expires (by the TTL header IMDS sends
  back, else by our own monotonic record), renewed at once on a 401 and the request retried
  once: the 401 storms of other tools come from never renewing. "Shortly" is judged by the
  lifetime IMDS granted (its TTL header), not the one we asked for: a 2 s grant judged by a
  6 h request would look expired at once and cost a token PUT before every GET.
- Transient failures (connect errors, timeouts, 429, 5xx) are retried with full-jitter
  backoff, but never past the caller's deadline, so a sick IMDS cannot delay the next poll.
- IMDSv1 (no token) only when allowed, and then with one warning; a token is asked for again
  after `V1_RETRY_AFTER`, or at once when a tokenless request is answered 401.
"""

from __future__ import annotations

import logging
import math
import random
import re
import socket
import threading
import time
from dataclasses import dataclass
from typing import Callable, Dict, Optional
from urllib.parse import urlsplit

from spotwatch import __version__
from spotwatch.config.schema import ImdsSettings
from spotwatch.detection.http import Connection, HttpError, Response, StaleConnection
from spotwatch.logevents import emit

log = logging.getLogger("spotwatch.imds")

TOKEN_PATH = "/latest/api/token"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
MAX_BODY = 256 * 1024  # user data is at most 16 KB; anything far larger is not IMDS
BACKOFF_BASE = 0.05
BACKOFF_CAP = 1.0
MIN_ATTEMPT = 0.02  # an attempt with less time than this left is not worth starting
# After falling back to IMDSv1, ask for a token again only this often: a token PUT that times
# out (hop limit, docs/aws-facts.md) would otherwise cost a whole `timeout` before every GET.
V1_RETRY_AFTER = 300.0


_TOKEN = re.compile(rb"[\x21-\x7e]{1,1024}")  # IMDS tokens are base64 text


class ImdsError(Exception):
    """IMDS gave no usable answer before the deadline; `str()` says why."""


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes


class _Transient(Exception):
    """A failure worth retrying (connection trouble, timeout, 429, 5xx)."""


def _is_transient_status(status: int) -> bool:
    return status == 429 or status >= 500


class ImdsClient:
    """Reads paths under `/latest/` from IMDS; see the module docstring for the rules."""

    def __init__(
        self,
        endpoint: str,
        *,
        timeout: float = 1.0,
        token_ttl: float = 21600.0,
        allow_imdsv1: bool = False,
        clock: Callable[[], float] = time.monotonic,
        cancel: Optional[threading.Event] = None,
    ) -> None:
        parts = urlsplit(endpoint)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"IMDS endpoint must be http://host[:port], got {endpoint!r}")
        self.endpoint = endpoint
        self._host = parts.hostname
        self._port = parts.port or 80
        self.timeout = timeout
        self._ttl = max(1, min(21600, int(token_ttl)))
        self._allow_v1 = allow_imdsv1
        self._clock = clock
        # Set when the daemon stops: a poll stuck in retries gives up at once.
        self._cancel = cancel or threading.Event()
        self._conn = Connection(self._host, self._port)
        self._agent = f"spotwatch/{__version__}"
        self._token: Optional[str] = None
        self._token_expires = 0.0
        self._granted_ttl = float(self._ttl)  # what IMDS said the current token lives
        self._warned_v1 = False
        self._v1_until = 0.0  # while the clock is before this, use IMDSv1 without asking
        self.token_renewals = 0  # successful token PUTs, for metrics
        self.requests = 0  # HTTP requests sent, for metrics and benchmarks

    # ----------------------------------------------------------------- public surface

    @classmethod
    def for_a_few_reads(cls, settings: ImdsSettings) -> ImdsClient:
        """A client for a few reads outside the poll loop (check, discovery, user data, the
        instance identity): the configured endpoint, timeout and IMDSv1 fallback, and a
        token of its own that lives a minute. Close it after use."""
        return cls(
            settings.endpoint,
            timeout=settings.timeout,
            token_ttl=60,
            allow_imdsv1=settings.allow_imdsv1,
        )

    def get(self, path: str, *, deadline: Optional[float] = None) -> Reply:
        """GET `/latest/<path>`; any status IMDS answers that is not transient is returned.

        `deadline` is on the client's monotonic clock; default: one `timeout` from now plus
        retries worth one more. Raises `ImdsError` when no answer came in time.
        """
        if deadline is None:
            deadline = self._clock() + 2 * self.timeout
        full_path = "/latest/" + path.lstrip("/")
        attempt = 0
        while True:
            try:
                return self._get_once(full_path, deadline)
            except _Transient as failure:
                attempt += 1
                pause = random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt))
                if self._clock() + pause + MIN_ATTEMPT >= deadline:
                    # The attempt count stays out of the message: repeats must read the same.
                    log.debug("IMDS %s: giving up after %d attempts", full_path, attempt)
                    raise ImdsError(f"{full_path}: {failure}") from None
                log.debug("IMDS %s: %s; retrying in %.0f ms", full_path, failure, pause * 1000)
                if self._cancel.wait(pause):
                    raise ImdsError(f"{full_path}: {failure} (stopping)") from None

    def now(self) -> float:
        """The client's monotonic clock, on which deadlines are given."""
        return self._clock()

    def invalidate_token(self) -> None:
        """Forget the token (after a resume from hibernation the old one may be stale)."""
        self._token = None
        self._token_expires = 0.0

    def close(self) -> None:
        self._conn.close()

    @property
    def has_token(self) -> bool:
        return self._token is not None and self._clock() < self._token_expires

    # ----------------------------------------------------------------- internals

    def _get_once(self, full_path: str, deadline: float) -> Reply:
        token = self._current_token(deadline)
        status, headers, body = self._request(
            "GET", full_path, self._token_headers(token), deadline
        )
        if status == 401:
            # The token was revoked or expired early, or IMDS now refuses IMDSv1: get a token
            # now and retry this once.
            self.invalidate_token()
            self._v1_until = 0.0
            retry_token = self._current_token(deadline)
            if token is not None or retry_token is not None:
                status, headers, body = self._request(
                    "GET", full_path, self._token_headers(retry_token), deadline
                )
        if _is_transient_status(status):
            raise _Transient(f"HTTP {status}")
        self._note_ttl(headers.get(TTL_HEADER.lower()))
        return Reply(status, body)

    def _token_headers(self, token: Optional[str]) -> Dict[str, str]:
        return {TOKEN_HEADER: token} if token is not None else {}

    def _current_token(self, deadline: float) -> Optional[str]:
        now = self._clock()
        if self._token is not None and now < self._token_expires:
            return self._token
        if self._allow_v1 and now < self._v1_until:
            return None
        try:
            return self._renew_token(deadline)
        except (ImdsError, _Transient) as failure:
            if not self._allow_v1:
                raise
            self._v1_until = self._clock() + V1_RETRY_AFTER
            if not self._warned_v1:
                self._warned_v1 = True
                emit(
                    log,
                    logging.WARNING,
                    "imdsv1-fallback",
                    f"IMDSv2 token unavailable ({failure}); falling back to IMDSv1 "
                    "because imds.allow_imdsv1 is set",
                )
            return None

    def _renew_token(self, deadline: float) -> str:
        status, headers, body = self._request(
            "PUT", TOKEN_PATH, {TTL_HEADER: str(self._ttl)}, deadline
        )
        if _is_transient_status(status):
            raise _Transient(f"token PUT answered HTTP {status}")
        if status != 200 or not body:
            raise ImdsError(f"token PUT answered HTTP {status}")
        token = body.strip()
        if not _TOKEN.fullmatch(token):
            # It goes into a header of every request: a byte outside printable ASCII would
            # fail every GET until the token expired (hours), and CR/LF would inject headers.
            raise _Transient(f"token PUT answered {len(body)} bytes that are not a token")
        self._token = token.decode("ascii")
        granted = _seconds(headers.get(TTL_HEADER.lower()))
        self._granted_ttl = granted if granted is not None and granted > 0 else float(self._ttl)
        self._token_expires = self._clock() + self._granted_ttl - self._renewal_margin()
        self.token_renewals += 1
        emit(
            log,
            logging.DEBUG,
            "imds-token",
            f"IMDSv2 token renewed (ttl {self._granted_ttl:g} s, asked {self._ttl} s)",
        )
        return self._token

    def _renewal_margin(self) -> float:
        """Renew a little early: a tenth of the granted lifetime, at most a minute (6 h -> 1 min
        early, 2 s -> 0.2 s early)."""
        return min(60.0, self._granted_ttl / 10)

    def _note_ttl(self, header: Optional[str]) -> None:
        """IMDS says how long the token still lives; believe it when it is sooner than ours."""
        remaining = _seconds(header)
        if remaining is None or self._token is None:
            return
        expires = self._clock() + remaining - self._renewal_margin()
        if expires < self._token_expires:
            self._token_expires = expires

    def _request(
        self, method: str, path: str, headers: Dict[str, str], deadline: float
    ) -> tuple[int, Dict[str, str], bytes]:
        budget = min(self.timeout, deadline - self._clock())
        if budget < MIN_ATTEMPT:
            raise _Transient("no time left in this poll")
        headers = {"User-Agent": self._agent, **headers}
        try:
            response = self._exchange(method, path, headers, budget)
        except StaleConnection as failure:
            # IMDS may close an idle keep-alive connection between polls: that is no failure,
            # so reconnect at once instead of backing off, with only the time still left.
            self.close()
            budget = min(self.timeout, deadline - self._clock())
            if budget < MIN_ATTEMPT:
                raise _Transient(_describe(failure)) from None
            try:
                response = self._exchange(method, path, headers, budget)
            except OSError as again:
                self.close()
                raise _Transient(_describe(again)) from None
        except OSError as failure:
            self.close()
            raise _Transient(_describe(failure)) from None
        return response.status, response.headers, response.body

    def _exchange(
        self, method: str, path: str, headers: Dict[str, str], budget: float
    ) -> Response:
        self.requests += 1
        return self._conn.request(method, path, headers, budget, MAX_BODY)


def _seconds(header: Optional[str]) -> Optional[float]:
    """A TTL header's seconds, or None when absent or not a finite number."""
    if header is None:
        return None
    try:
        value = float(header)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _describe(failure: BaseException) -> str:
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
