"""One botocore session and its clients (ECS, EC2, Auto Scaling, ELB, ...), shared by every
AWS step.

- Credentials come from boto3's default chain (the instance profile on EC2).
- Region: `ecs.region` when set, else the region of the container instance ARN (told to us
  by ECS discovery), else `AWS_REGION` / `AWS_DEFAULT_REGION`, else IMDS
  `meta-data/placement/region`.
- Endpoints: botocore reads `AWS_ENDPOINT_URL` and `AWS_ENDPOINT_URL_<SERVICE>` itself
  (detected at run time by its `ignore_configured_endpoint_urls` setting); on older botocore
  we read them here so a local endpoint still works.
- Retries are ours, not botocore's (its own are off): `Bounded.call` retries throttling and
  transient faults with spotwatch.parts.awsapi.retry's policy for as long as the caller's bound
  (the time left, or a step's own) allows, never a fixed count or a quota; each attempt gets a
  client whose timeouts fit in what is left (5 s read timeout, then 2, 1, 0.5 s when less is
  left), so no call outlives its bound by more than a connect. Calls wait in one line per
  throttling bucket (the final stop's first), a `Gate` per service stops an instance sending
  16 calls at once into a throttled API, and a `Pacer` per bucket spaces them by the rate
  the bucket serves this client once it throttles: a throttled call goes back in line
  instead of backing off on its own (docs/benchmarks.md, "Storm": 1.7x the calls needed
  instead of 3.5x at 100 instances; every StopTask token used where there are too few).
- Clients are created on first use, not at start (bench/aws_client_cost.py): warming both
  at start costs ~35 MB of idle RSS for weeks (29 -> 64 MB) to save ~0.15-0.3 s once, on
  the first call after a notice (cold 176-325 ms vs warm 7-17 ms) out of a ~110 s budget.
- Clients come straight from botocore (boto3's `client()` is a thin wrapper; boto3 itself
  would add ~10 MB for resources we do not use).
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple, Type

from spotwatch.clouds.aws.imds import ImdsClient, ImdsError
from spotwatch.logevents import emit
from spotwatch.parts.awsapi.bounded import Bounded, TimeLeft
from spotwatch.parts.awsapi.buckets import bucket_of
from spotwatch.parts.awsapi.callline import CallLine, Ticket
from spotwatch.parts.awsapi.retry import DEFAULT, DeadlineBackoff, is_retryable, is_throttling

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ecs import ECSClient

log = logging.getLogger("spotwatch.aws")

CONNECT_TIMEOUT = 2.0
READ_TIMEOUT = 5.0
# Read timeouts of the clients an attempt may get: the longest that, with its connect
# timeout, fits in the time left. The shorter ones are made only when a call has < 7 s.
TIMEOUT_TIERS = (READ_TIMEOUT, 2.0, 1.0, 0.5, 0.2)
POOL_SIZE = 16  # as many connections as concurrent StopTask calls
REGION_PATH = "meta-data/placement/region"


class AwsSetupError(Exception):
    """No client can be made (no region, broken botocore setup); `str()` says why."""


class OutOfTime(Exception):
    """A call's bound ran out before an attempt could be sent; `str()` says which call."""




def describe_error(failure: BaseException) -> str:
    """An AWS failure in the API's own words: `AccessDeniedException: User: ... is not ...`."""
    response = getattr(failure, "response", None)
    if isinstance(response, dict):
        error = response.get("Error") or {}
        code = error.get("Code") or "Error"
        message = error.get("Message") or str(failure)
        return f"{code}: {message}"
    text = str(failure) or type(failure).__name__
    if isinstance(failure, (AwsSetupError, OutOfTime)):
        return text
    return f"{type(failure).__name__}: {text}"


def api_errors() -> Tuple[Type[BaseException], ...]:
    """What an AWS call raises for a foreseeable failure (imports botocore on first use)."""
    from botocore.exceptions import BotoCoreError, ClientError

    return (ClientError, BotoCoreError, AwsSetupError, OutOfTime)


def error_code(failure: BaseException) -> str:
    """The API's error code (`ThrottlingException`, `DryRunOperation`, ...) or ''."""
    response = getattr(failure, "response", None)
    if isinstance(response, dict):
        return str((response.get("Error") or {}).get("Code") or "")
    return ""


def region_from_arn(arn: str) -> Optional[str]:
    """`arn:aws:ecs:eu-west-1:123:container-instance/...` -> `eu-west-1`."""
    parts = arn.split(":")
    if len(parts) >= 6 and parts[0] == "arn" and parts[3]:
        return parts[3]
    return None


def _endpoint_env_is_native() -> bool:
    from botocore.configprovider import BOTOCORE_DEFAUT_SESSION_VARIABLES

    return "ignore_configured_endpoint_urls" in BOTOCORE_DEFAUT_SESSION_VARIABLES


def endpoint_from_env(service: str, environ: Optional[Dict[str, str]] = None) -> Optional[str]:
    """`AWS_ENDPOINT_URL_<SERVICE>`, else `AWS_ENDPOINT_URL` (for botocore that lacks them)."""
    env = os.environ if environ is None else environ
    return env.get(f"AWS_ENDPOINT_URL_{service.upper()}") or env.get("AWS_ENDPOINT_URL") or None


class AwsClients:
    """Lazily made, thread-safe ECS and EC2 clients on one session.

    `region`: an explicit region (`ecs.region`); `imds_endpoint` etc.: where to ask for the
    region when nothing else says it; `policy`, `rng`: when to retry (spotwatch.parts.awsapi.retry).
    """

    def __init__(
        self,
        *,
        region: Optional[str] = None,
        imds_endpoint: str = "http://169.254.169.254",
        imds_timeout: float = 1.0,
        allow_imdsv1: bool = False,
        policy: DeadlineBackoff = DEFAULT,
        rng: Optional[random.Random] = None,
    ) -> None:
        self.explicit_region = region
        self._imds = (imds_endpoint, imds_timeout, allow_imdsv1)
        self._lock = threading.Lock()
        self._hint: Optional[str] = None
        self._imds_region: Optional[str] = None
        self._built_region: Optional[str] = None
        self._clients: Dict[Tuple[str, float], Any] = {}
        self._session: Any = None  # one botocore session: credentials resolved once
        self.policy = policy
        self._rng = rng or random.Random()
        self._gates: Dict[str, CallLine] = {}
        self._throttled_by: Dict[str, str] = {}  # service -> its last throttling answer

    def prefer_region(self, region: Optional[str]) -> None:
        """The region of the container instance ARN: wins over the environment and IMDS."""
        if region:
            with self._lock:
                self._hint = region

    def region(self) -> str:
        with self._lock:
            return self._region_locked()

    def ecs(self, read_timeout: float = READ_TIMEOUT) -> ECSClient:
        client: ECSClient = self._client("ecs", read_timeout)
        return client

    def ec2(self, read_timeout: float = READ_TIMEOUT) -> EC2Client:
        client: EC2Client = self._client("ec2", read_timeout)
        return client

    def bounded(self, time_left: TimeLeft, *, urgent: bool = False) -> Bounded:
        """Calls bounded by `time_left()` (seconds; e.g. `ctx.clock.time_left`, or less for
        a step told its own bound); `urgent`: the calls that matter most (module docstring
        of spotwatch.parts.awsapi.retry)."""
        return Bounded(self, time_left, self.policy.urgent() if urgent else self.policy, urgent)

    def call(
        self,
        service: str,
        operation: str,
        params: Dict[str, Any],
        time_left: TimeLeft,
        policy: DeadlineBackoff,
        urgent: bool = False,
    ) -> Dict[str, Any]:
        """`operation` (`stop_task`, ...) retried per `policy` while `time_left()` allows;
        raises the last failure (or `OutOfTime`) when it does not. `urgent`: ahead in line."""
        from botocore.exceptions import ClientError

        line = self._line(service)
        attempt = 0
        last: Optional[BaseException] = None
        ticket = line.join(bucket_of(service, operation), urgent)
        while True:
            try:
                sent_at = self._enter(line, ticket, service, operation, time_left)
            except OutOfTime:
                if last is None:
                    raise
                raise last from None  # what the API said is the better cause
            throttled = served = False
            try:
                client = self._client(service, _tier(time_left()))
                answer: Dict[str, Any] = getattr(client, operation)(**params)
                served = True
                return answer
            except ClientError as failure:
                code = error_code(failure)
                status = failure.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                throttled = is_throttling(code, status)
                if throttled:
                    self._throttled_by[service] = describe_error(failure)
                if not is_retryable(code, status):
                    raise
                last = failure
            except _transient_errors() as failure:
                last = failure
            finally:
                line.answered(ticket, throttled, served, sent_at)
            if throttled:
                line.rejoin(ticket)  # back in line, where it was: paced
                continue
            attempt += 1
            wait = self.policy_delay(policy, line.backoff_attempt(attempt), time_left())
            if wait is None:
                raise last
            time.sleep(wait)
            line.rejoin(ticket)

    def policy_delay(
        self, policy: DeadlineBackoff, attempt: int, time_left: float
    ) -> Optional[float]:
        with self._lock:  # random.Random is not safe to share between threads unlocked
            return policy.delay(attempt, time_left, self._rng)

    def client(self, service: str) -> Any:
        """Any other service's client (sns, events, ...), made the same way."""
        return self._client(service, READ_TIMEOUT)

    # ----------------------------------------------------------------- internals

    def _region_locked(self) -> str:
        found = (
            self.explicit_region
            or self._hint
            or os.environ.get("AWS_REGION")
            or os.environ.get("AWS_DEFAULT_REGION")
            or self._imds_region
        )
        if found:
            return found
        self._imds_region = self._region_from_imds()
        return self._imds_region

    def _region_from_imds(self) -> str:
        endpoint, timeout, allow_v1 = self._imds
        client = ImdsClient(endpoint, timeout=timeout, token_ttl=60, allow_imdsv1=allow_v1)
        try:
            reply = client.get(REGION_PATH)
        except (ImdsError, ValueError) as failure:
            raise AwsSetupError(f"no AWS region: not configured, and IMDS: {failure}") from None
        finally:
            client.close()
        region = reply.body.decode("ascii", "replace").strip()
        if reply.status != 200 or not region:
            raise AwsSetupError(
                f"no AWS region: not configured, and IMDS {REGION_PATH} "
                f"answered HTTP {reply.status}"
            )
        return region

    def _line(self, service: str) -> CallLine:
        with self._lock:
            found = self._gates.get(service)
            if found is None:
                found = self._gates[service] = CallLine(POOL_SIZE, self._rng.random())
            return found

    def _enter(
        self,
        line: CallLine,
        ticket: Ticket,
        service: str,
        operation: str,
        time_left: TimeLeft,
    ) -> float:
        """When the call was let go (monotonic); OutOfTime when its bound came first."""
        sent_at = line.enter(ticket, lambda: time_left() - self.policy.least_attempt)
        if sent_at is None:
            why = self._throttled_by.get(service)
            raise OutOfTime(
                f"{_api_name(operation)}: no time left to call {service}"
                + (f" (throttled: {why})" if why else "")
            )
        return sent_at

    def _client(self, service: str, read_timeout: float = READ_TIMEOUT) -> Any:
        with self._lock:
            region = self._region_locked()
            if region != self._built_region:
                self._clients.clear()
                self._built_region = region
            key = (service, read_timeout)
            client = self._clients.get(key)
            if client is None:
                client = self._make(service, region, read_timeout)
                self._clients[key] = client
            return client

    def _make(self, service: str, region: str, read_timeout: float = READ_TIMEOUT) -> Any:
        # Lazy on purpose: warm clients cost ~35 MB idle to save ~0.2 s once (module docstring).
        from botocore.config import Config as BotoConfig

        config = BotoConfig(
            retries={"mode": "standard", "total_max_attempts": 1},  # ours: `call`
            connect_timeout=min(CONNECT_TIMEOUT, read_timeout),
            read_timeout=read_timeout,
            max_pool_connections=POOL_SIZE,
        )
        # None lets botocore resolve the endpoint itself (including the variables above).
        endpoint = None if _endpoint_env_is_native() else endpoint_from_env(service)
        with _make_lock:
            if self._session is None:
                self._session = _new_session()
            client = self._session.create_client(
                service, region_name=region, config=config, endpoint_url=endpoint
            )
        where = client.meta.endpoint_url
        emit(log, logging.DEBUG, "aws-client", f"{service} client for {region} at {where}")
        return client


def _tier(time_left: float) -> float:
    """The longest read timeout that, with its connect timeout, fits in `time_left`."""
    for read in TIMEOUT_TIERS:
        if read + min(CONNECT_TIMEOUT, read) <= time_left:
            return read
    return TIMEOUT_TIERS[-1]


def _api_name(operation: str) -> str:
    """`stop_task` -> `StopTask`, as AWS names it in its errors."""
    return "".join(part.capitalize() for part in operation.split("_"))


def _transient_errors() -> Tuple[Type[BaseException], ...]:
    """No answer at all: the connection failed, was cut, or the answer did not come in time."""
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from botocore.exceptions import HTTPClientError  # read timeouts, connections cut

    return (BotoConnectionError, HTTPClientError)


# Client creation is not thread-safe in botocore; and parsed service models are kept across
# sessions (EC2's takes ~0.4 s to load), so a reload or `check` does not pay for them again.
_make_lock = threading.Lock()
_shared_loader: Any = None


def _new_session() -> Any:
    """A botocore session (what boto3 wraps: the same credential chain, config files and
    endpoint variables) sharing one model loader with the others."""
    import botocore.session

    global _shared_loader
    session = botocore.session.get_session()
    if _shared_loader is None:
        _shared_loader = session.get_component("data_loader")
    else:
        session.register_component("data_loader", _shared_loader)
    return session
