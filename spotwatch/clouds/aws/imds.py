"""AWS's metadata client: IMDSv2 on top of the shared metadata client (detection/metadata.py:
one keep-alive connection, bounded requests, jittered retries inside the caller's deadline).

- The session token is reused until shortly before it expires (by the TTL header IMDS sends
  back, else by our own monotonic record), renewed at once on a 401 and the request retried
  once: the 401 storms of other tools come from never renewing. "Shortly" is judged by the
  lifetime IMDS granted (its TTL header), not the one we asked for: a 2 s grant judged by a
  6 h request would look expired at once and cost a token PUT before every GET.
- IMDSv1 (no token) only when allowed, and then with one warning; a token is asked for again
  after `V1_RETRY_AFTER`, or at once when a tokenless request is answered 401.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import Callable, Dict, Optional, Tuple

from spotwatch.config.schema import ImdsSettings
from spotwatch.detection.metadata import (
    MetadataClient,
    MetadataError,
    Reply,
    Transient,
    is_transient_status,
    seconds_header,
)
from spotwatch.logevents import emit

log = logging.getLogger("spotwatch.imds")

TOKEN_PATH = "/latest/api/token"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
# After falling back to IMDSv1, ask for a token again only this often: a token PUT that times
# out (hop limit, docs/aws-facts.md) would otherwise cost a whole `timeout` before every GET.
V1_RETRY_AFTER = 300.0


_TOKEN = re.compile(rb"[\x21-\x7e]{1,1024}")  # IMDS tokens are base64 text

# IMDS gave no usable answer before the deadline (the shared client's error, by AWS's name).
ImdsError = MetadataError


INSTANCE_ID_PATH = "meta-data/instance-id"


def read_instance_id(client: MetadataClient, deadline: float) -> Tuple[Optional[str], str]:
    """(the instance id IMDS answers by `deadline` (the client's clock), "") or (None, why
    not): `i-` and at most 40 characters, as EC2's are."""
    text, why = client.read_text(INSTANCE_ID_PATH, deadline)
    if text is not None and not (text.startswith("i-") and len(text) < 40):
        return None, f"IMDS {INSTANCE_ID_PATH} answered {len(text)} characters that are no id"
    return text, why and f"IMDS: {why}"


LOCAL_HOSTNAME_PATH = "meta-data/local-hostname"


def read_local_hostname(settings: ImdsSettings) -> Optional[str]:
    """The instance's private DNS name (the node name EKS and kubeadm on AWS register), or
    None, said once in the log, when IMDS does not give it."""
    client = ImdsClient.for_a_few_reads(settings)
    try:
        text, why = client.read_text(LOCAL_HOSTNAME_PATH, client.now() + 2 * client.timeout)
    finally:
        client.close()
    if text is not None and not any(c.isspace() for c in text):
        return text
    why = why or f"{LOCAL_HOSTNAME_PATH} answered a value with spaces"
    emit(log, logging.WARNING, "node-name", f"IMDS gave no node name ({why}): the host name")
    return None


class ImdsClient(MetadataClient):
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
        super().__init__(endpoint, timeout=timeout, clock=clock, cancel=cancel)
        self._ttl = max(1, min(21600, int(token_ttl)))
        self._allow_v1 = allow_imdsv1
        self._token: Optional[str] = None
        self._token_expires = 0.0
        self._granted_ttl = float(self._ttl)  # what IMDS said the current token lives
        self._warned_v1 = False
        self._v1_until = 0.0  # while the clock is before this, use IMDSv1 without asking
        self.token_renewals = 0  # successful token PUTs, for metrics

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

    def full_path(self, path: str) -> str:
        return "/latest/" + path.lstrip("/")

    def invalidate_token(self) -> None:
        """Forget the token (after a resume from hibernation the old one may be stale)."""
        self._token = None
        self._token_expires = 0.0

    def resumed(self) -> None:
        super().resumed()
        self.invalidate_token()

    @property
    def has_token(self) -> bool:
        return self._token is not None and self._clock() < self._token_expires

    # ----------------------------------------------------------------- internals

    def _get_once(self, full_path: str, deadline: float) -> Reply:
        token = self._current_token(deadline)
        response = self._request("GET", full_path, self._token_headers(token), deadline)
        if response.status == 401:
            # The token was revoked or expired early, or IMDS now refuses IMDSv1: get a token
            # now and retry this once.
            self.invalidate_token()
            self._v1_until = 0.0
            retry_token = self._current_token(deadline)
            if token is not None or retry_token is not None:
                response = self._request(
                    "GET", full_path, self._token_headers(retry_token), deadline
                )
        reply = self._reply(response)
        self._note_ttl(response.headers.get(TTL_HEADER.lower()))
        return reply

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
        except (MetadataError, Transient) as failure:
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
        response = self._request("PUT", TOKEN_PATH, {TTL_HEADER: str(self._ttl)}, deadline)
        status, headers, body = response.status, response.headers, response.body
        if is_transient_status(status):
            raise Transient(f"token PUT answered HTTP {status}")
        if status != 200 or not body:
            raise ImdsError(f"token PUT answered HTTP {status}")
        token = body.strip()
        if not _TOKEN.fullmatch(token):
            # It goes into a header of every request: a byte outside printable ASCII would
            # fail every GET until the token expired (hours), and CR/LF would inject headers.
            raise Transient(f"token PUT answered {len(body)} bytes that are not a token")
        self._token = token.decode("ascii")
        granted = seconds_header(headers.get(TTL_HEADER.lower()))
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
        remaining = seconds_header(header)
        if remaining is None or self._token is None:
            return
        expires = self._clock() + remaining - self._renewal_margin()
        if expires < self._token_expires:
            self._token_expires = expires
