"""A local stand-in for the EC2 instance metadata service (IMDS).

``spotwatch rehearse``, ``spotwatch simulate-imds`` and the test suites point the daemon at this
server instead of 169.254.169.254. It follows the IMDS rules spotwatch depends on
(docs/aws-facts.md): IMDSv2 session tokens with a TTL, 401 for unknown or expired tokens, 403
for a token PUT carrying ``X-Forwarded-For``, and the Spot paths (instance-action,
termination-time, rebalance) that are 404 until a notice is raised. Faults (error statuses,
hangs, connection resets) can be injected per path prefix to exercise the client's retry logic.

Deliberately self-contained: standard library only and no imports from the rest of spotwatch, so
the simulator can never share a bug with the code it is used to test."""

import base64
import json
import secrets
import time
from datetime import datetime, timedelta
from typing import Dict, Optional, Tuple, Union

from spotwatch.simulator.events import SCHEDULED_PATH, ScheduledEvents
from spotwatch.simulator.http import (
    TEXT,
    TOKEN_HEADER,
    TTL_HEADER,
    Answer,
    Request,
    phrase,
)
from spotwatch.simulator.service import LogEntry, SimulatedService
from spotwatch.simulator.tree import answer_from_tree, format_time, instance_documents, utcnow

TOKEN_PATH = "/latest/api/token"
MAX_TOKEN_TTL = 21600

INSTANCE_ACTION_PATH = "/latest/meta-data/spot/instance-action"
TERMINATION_TIME_PATH = "/latest/meta-data/spot/termination-time"
REBALANCE_PATH = "/latest/meta-data/events/recommendations/rebalance"
# Present only for an instance in an Auto Scaling group (404 otherwise), as plain text.
TARGET_LIFECYCLE_STATE_PATH = "/latest/meta-data/autoscaling/target-lifecycle-state"

__all__ = ["ImdsSimulator", "LogEntry", "format_time"]


class ImdsSimulator(SimulatedService):
    """An IMDS on 127.0.0.1 whose answers and faults the caller controls (lifecycle, faults
    and counters: simulator/service.py).

    Every setter takes effect for the next request. All state sits behind one lock; each request
    computes its whole answer under it, so it sees one consistent snapshot.
    """

    kind = "imds-simulator"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        imdsv2_only: bool = True,
        instance_id: str = "i-0123456789abcdef0",
        region: str = "us-east-1",
        delay: float = 0.0,
        verbose: bool = False,
        max_token_ttl: int = MAX_TOKEN_TTL,
    ) -> None:
        super().__init__(host, port, delay=delay, verbose=verbose)
        # IMDS may grant a token a shorter life than asked for, and says so in its TTL
        # header; a client must go by what was granted.
        self.max_token_ttl = max_token_ttl
        self.imdsv2_only = imdsv2_only
        self.instance_id = instance_id
        self.region = region
        self._tokens: Dict[str, float] = {}  # token -> monotonic expiry
        self._instance_action: Optional[bytes] = None
        self._termination_time: Optional[bytes] = None
        self._rebalance: Optional[bytes] = None
        self._asg_state: Optional[bytes] = None
        self._user_data: Optional[bytes] = None
        self._hibernation: Optional[bool] = False
        self.scheduled = ScheduledEvents()  # events/maintenance/scheduled: `[]` when none
        self._overrides: Dict[str, Tuple[int, bytes]] = {}

    # --- what IMDS says --------------------------------------------------------------------

    def set_instance_action(self, action: str, time: Union[str, datetime, None] = None) -> None:
        """Mark the instance. The time defaults to two minutes ahead (hibernate: now, as
        hibernation begins at once). Like real IMDS, a terminate notice also shows up in
        spot/termination-time; stop and hibernate do not."""
        if time is None:
            lead = 0 if action == "hibernate" else 120
            time = utcnow() + timedelta(seconds=lead)
        when = format_time(time)
        body = json.dumps({"action": action, "time": when}).encode()
        with self._lock:
            self._instance_action = body
            self._termination_time = when.encode() if action == "terminate" else None

    def raise_notice(self, action: str, lead: float) -> str:
        """Raise a notice `lead` seconds ahead (truncated to whole seconds, as IMDS times are).
        "rebalance" sets the rebalance recommendation instead. Returns the time string."""
        when = format_time(utcnow() + timedelta(seconds=lead))
        if action == "rebalance":
            self.set_rebalance(when)
        else:
            self.set_instance_action(action, when)
        return when

    def spot_notice(self) -> Optional[bytes]:
        """The instance-action body now answered (None: 404)."""
        with self._lock:
            return self._instance_action

    def clear_instance_action(self) -> None:
        with self._lock:
            self._instance_action = None
            self._termination_time = None

    def set_termination_time(self, body: Optional[str]) -> None:
        with self._lock:
            self._termination_time = None if body is None else body.encode()

    def set_rebalance(self, notice_time: Union[str, datetime, None]) -> None:
        body = None
        if notice_time is not None:
            body = json.dumps({"noticeTime": format_time(notice_time)}).encode()
        with self._lock:
            self._rebalance = body

    def set_asg_state(self, state: Optional[str]) -> None:
        """The Auto Scaling target lifecycle state (`InService`, `Terminated`, ...); None:
        the instance is in no group, and the path answers 404."""
        with self._lock:
            self._asg_state = None if state is None else state.encode()

    def set_path(self, path: str, status: int, body: Union[str, bytes]) -> None:
        """Answer GETs of `path` with this status and body, ahead of everything built in.
        Token checks still apply first. "meta-data/x" is short for "/latest/meta-data/x"."""
        data = body.encode() if isinstance(body, str) else body
        with self._lock:
            self._overrides[_latest(path)] = (status, data)

    def clear_path(self, path: str) -> None:
        with self._lock:
            self._overrides.pop(_latest(path), None)

    def set_user_data(self, data: Optional[bytes]) -> None:
        with self._lock:
            self._user_data = data

    def set_hibernation_configured(self, value: Optional[bool]) -> None:
        with self._lock:
            self._hibernation = value

    # --- faults ----------------------------------------------------------------------------

    def revoke_tokens(self) -> None:
        """Forget every issued token: clients must get a new one after their next 401."""
        with self._lock:
            self._tokens.clear()

    # --- counters --------------------------------------------------------------------------

    @property
    def token_puts(self) -> int:
        """Successful token PUTs."""
        return self.count("PUT", TOKEN_PATH, 200)

    # --- answers ---------------------------------------------------------------------------

    def answer(self, request: Request) -> Answer:
        if request.method == "PUT":
            ttl = request.headers.get(TTL_HEADER.lower())
            return self._answer_put(request.path, ttl, "x-forwarded-for" in request.headers)
        if request.method != "GET":
            return _error(405)
        return self._answer_get(request.path, request.headers.get(TOKEN_HEADER.lower()))

    def _answer_put(self, path: str, ttl_header: Optional[str], forwarded: bool) -> Answer:
        if path != TOKEN_PATH:
            return _error(405)
        if forwarded:
            return _error(403)  # IMDS refuses token PUTs that went through a proxy
        raw = (ttl_header or "").strip()
        if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_TOKEN_TTL:
            return _error(400)
        ttl = min(int(raw), self.max_token_ttl)
        token = base64.b64encode(secrets.token_bytes(42)).decode()
        now = time.monotonic()
        with self._lock:
            # Drop expired tokens here so the table cannot grow without bound.
            self._tokens = {t: exp for t, exp in self._tokens.items() if exp > now}
            self._tokens[token] = now + ttl
        return 200, token.encode(), TEXT, {TTL_HEADER: str(ttl)}

    def _answer_get(self, path: str, token: Optional[str]) -> Answer:
        if path == TOKEN_PATH:
            return _error(405)
        with self._lock:
            extra: Dict[str, str] = {}
            if token is not None:
                expiry = self._tokens.get(token)
                remaining = -1.0 if expiry is None else expiry - time.monotonic()
                if remaining <= 0:
                    return _error(401)
                extra[TTL_HEADER] = str(int(remaining))
            elif self.imdsv2_only:
                return _error(401)
            status, body, content_type = self._lookup(path)
        return status, body, content_type, extra

    def _lookup(self, path: str) -> Tuple[int, bytes, str]:
        """Answer one GET from the current state; the caller holds the lock."""
        override = self._overrides.get(path)
        if override is not None:
            return override[0], override[1], TEXT
        return answer_from_tree(self._documents(), path)

    def _documents(self) -> Dict[str, bytes]:
        """Every path that answers 200 right now, with its body."""
        docs = instance_documents(self.instance_id, self.region)
        optional = {
            INSTANCE_ACTION_PATH: self._instance_action,
            TERMINATION_TIME_PATH: self._termination_time,
            REBALANCE_PATH: self._rebalance,
            TARGET_LIFECYCLE_STATE_PATH: self._asg_state,
            SCHEDULED_PATH: self.scheduled.body(),
            "/latest/user-data": self._user_data,
            "/latest/meta-data/hibernation/configured": (
                None if self._hibernation is None else str(self._hibernation).lower().encode()
            ),
        }
        docs.update((p, body) for p, body in optional.items() if body is not None)
        # Overrides answering 200 appear in listings; others hide the built-in path.
        for p, (status, body) in self._overrides.items():
            if status == 200:
                docs[p] = body
            else:
                docs.pop(p, None)
        return docs


def _error(status: int) -> Answer:
    return status, phrase(status), TEXT, {}


def _latest(path: str) -> str:
    """Normalise an override path: "meta-data/x" and "/meta-data/x" mean "/latest/meta-data/x"."""
    if path.startswith("/latest/"):
        return path
    return "/latest/" + path.lstrip("/")
