"""One botocore session and its ECS and EC2 clients, shared by every AWS step.

- Credentials come from boto3's default chain (the instance profile on EC2).
- Region: `ecs.region` when set, else the region of the container instance ARN (told to us
  by ECS discovery), else `AWS_REGION` / `AWS_DEFAULT_REGION`, else IMDS
  `meta-data/placement/region`.
- Endpoints: botocore reads `AWS_ENDPOINT_URL` and `AWS_ENDPOINT_URL_<SERVICE>` itself
  (detected at run time by its `ignore_configured_endpoint_urls` setting); on older botocore
  we read them here so a local endpoint still works.
- Retries: botocore's standard mode (throttling and transient errors, with backoff), with
  timeouts short enough that a few attempts fit well inside a two-minute notice.
- Clients are created on first use, not at start (bench/aws_client_cost.py): warming both
  at start costs ~35 MB of idle RSS for weeks (29 -> 64 MB) to save ~0.15-0.3 s once, on
  the first call after a notice (cold 176-325 ms vs warm 7-17 ms) out of a ~110 s budget.
- Clients come straight from botocore (boto3's `client()` is a thin wrapper over it; boto3
  itself would add ~10 MB for resources we do not use).
"""

from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple, Type

from spotwatch.detection.imds import ImdsClient, ImdsError
from spotwatch.logevents import emit

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ecs import ECSClient

log = logging.getLogger("spotwatch.aws")

CONNECT_TIMEOUT = 2.0
READ_TIMEOUT = 5.0
MAX_ATTEMPTS = 4  # in all, first try included: worst case ~4 x 7 s plus backoff
POOL_SIZE = 16  # as many connections as concurrent StopTask calls
REGION_PATH = "meta-data/placement/region"


class AwsSetupError(Exception):
    """No client can be made (no region, broken botocore setup); `str()` says why."""


def describe_error(failure: BaseException) -> str:
    """An AWS failure in the API's own words: `AccessDeniedException: User: ... is not ...`."""
    response = getattr(failure, "response", None)
    if isinstance(response, dict):
        error = response.get("Error") or {}
        code = error.get("Code") or "Error"
        message = error.get("Message") or str(failure)
        return f"{code}: {message}"
    text = str(failure) or type(failure).__name__
    return text if isinstance(failure, AwsSetupError) else f"{type(failure).__name__}: {text}"


def api_errors() -> Tuple[Type[BaseException], ...]:
    """What an AWS call raises for a foreseeable failure (imports botocore on first use)."""
    from botocore.exceptions import BotoCoreError, ClientError

    return (ClientError, BotoCoreError, AwsSetupError)


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
    region when nothing else says it.
    """

    def __init__(
        self,
        *,
        region: Optional[str] = None,
        imds_endpoint: str = "http://169.254.169.254",
        imds_timeout: float = 1.0,
        allow_imdsv1: bool = False,
    ) -> None:
        self.explicit_region = region
        self._imds = (imds_endpoint, imds_timeout, allow_imdsv1)
        self._lock = threading.Lock()
        self._hint: Optional[str] = None
        self._imds_region: Optional[str] = None
        self._built_region: Optional[str] = None
        self._clients: Dict[str, Any] = {}
        self._session: Any = None  # one botocore session: credentials resolved once

    def prefer_region(self, region: Optional[str]) -> None:
        """The region of the container instance ARN: wins over the environment and IMDS."""
        if region:
            with self._lock:
                self._hint = region

    def region(self) -> str:
        with self._lock:
            return self._region_locked()

    def ecs(self) -> ECSClient:
        client: ECSClient = self._client("ecs")
        return client

    def ec2(self) -> EC2Client:
        client: EC2Client = self._client("ec2")
        return client

    def client(self, service: str) -> Any:
        """Any other service's client (sns, events, ...), made the same way."""
        return self._client(service)

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

    def _client(self, service: str) -> Any:
        with self._lock:
            region = self._region_locked()
            if region != self._built_region:
                self._clients.clear()
                self._built_region = region
            client = self._clients.get(service)
            if client is None:
                client = self._make(service, region)
                self._clients[service] = client
            return client

    def _make(self, service: str, region: str) -> Any:
        # Lazy on purpose: warm clients cost ~35 MB idle to save ~0.2 s once (module docstring).
        from botocore.config import Config as BotoConfig

        config = BotoConfig(
            retries={"mode": "standard", "total_max_attempts": MAX_ATTEMPTS},
            connect_timeout=CONNECT_TIMEOUT,
            read_timeout=READ_TIMEOUT,
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
