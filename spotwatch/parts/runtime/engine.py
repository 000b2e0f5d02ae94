"""The Docker Engine API on this host, through the `docker` SDK: find containers, stop many
at once with a stop timeout, wait for them to exit.

Used by the ECS stop and final stop (`ecs.stop_via`, spotwatch.parts.ecs.onhost) and by the
`docker-stop` hook preset. The SDK (PyPI `docker`, the `docker` extra) is optional at run
time: `sdk_missing()` says why it cannot be used, and it is imported only when a client is
made. `connect()` asks the daemon its API version (the SDK's `version="auto"`), so a client
speaks what the daemon speaks (Docker 29 refuses API versions below 1.44, Docker 20.10 those
above 1.41), and that first call is also the proof the daemon answers.

Every call is bounded: by the client's `timeout` (reads, the version), by `t` + `timeout`
for a stop (the daemon answers a stop once the container has exited, SIGKILLed after `t`
seconds if it had to be). Nothing here raises for a foreseeable failure: a daemon that does
not answer, a container that is gone, an API error are results, in Docker's words.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Type,
    cast,
)

from spotwatch.parts.causes import short_cause

if TYPE_CHECKING:
    from docker import APIClient

DEFAULT_HOST = "unix:///var/run/docker.sock"
CALL_TIMEOUT = 2.0  # a local daemon answers in milliseconds; 2 s of silence means it will not
MOST_AT_ONCE = 64  # stop calls in flight (each holds a connection until its container exits)

EXITED = "exited"  # not running any more: this call stopped it, or it had stopped already
GONE = "gone"  # no such container (removed): nothing of it runs
FAILED = "failed"  # the daemon did not stop it, or did not say so in time


def sdk_missing() -> Optional[str]:
    """Why the `docker` SDK cannot be used here, or None when it can."""
    try:
        import docker  # noqa: F401  (~8 MB with requests already in)
    except ImportError as failure:
        return f"the docker SDK is not installed ({failure})"
    return None


@dataclass(frozen=True)
class Summary:
    """A container as the daemon lists it."""

    id: str
    name: str
    running: bool
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Details(Summary):
    """A container as the daemon inspects it."""

    exit_code: Optional[int] = None  # None while it runs
    restart_policy: str = "no"  # Docker's own: no, always, unless-stopped, on-failure


@dataclass(frozen=True)
class Stop:
    """How one container's stop (or wait) ended."""

    container_id: str
    outcome: str  # EXITED, GONE or FAILED
    seconds: float  # how long the call took
    error: str = ""  # why FAILED

    @property
    def exited(self) -> bool:
        return self.outcome != FAILED


@dataclass(frozen=True)
class Found:
    containers: List[Summary]
    error: str = ""  # why the list could not be had (then `containers` is empty)


def _errors() -> Tuple[Type[BaseException], ...]:
    import requests
    from docker.errors import DockerException

    return (DockerException, requests.RequestException)


def describe_failure(failure: BaseException) -> str:
    """A Docker failure in a few words: `HTTP 404: No such container: x`, `timed out`,
    `[Errno 2] No such file or directory` (the socket is not there)."""
    status = getattr(failure, "status_code", None)
    said = getattr(failure, "explanation", None)
    if status is not None:
        return f"HTTP {status}: {said or failure}"
    return short_cause(failure.__cause__ or failure)


def connect(
    host: str = DEFAULT_HOST, timeout: float = CALL_TIMEOUT, at_once: int = MOST_AT_ONCE
) -> Tuple[Optional[Engine], str]:
    """A client of the daemon at `host` (`unix:///path` or `tcp://host:port`), or None and
    why not; `timeout`: seconds any read may take (a stop: its `t` more), `at_once`: how
    many calls may be in flight."""
    missing = sdk_missing()
    if missing:
        return None, missing
    import docker

    try:
        # The SDK hands `timeout` to requests, which takes fractions of a second too.
        api = docker.APIClient(
            base_url=host, version="auto", timeout=cast(int, timeout), max_pool_size=at_once
        )
    except _errors() as failure:
        return None, f"{host}: {describe_failure(failure)}"
    return Engine(api, host, timeout, at_once), ""


class Engine:
    """One daemon's API: `find`, `inspect`, `stop`, `wait_exited`. Thread-safe."""

    def __init__(self, api: APIClient, host: str, timeout: float, at_once: int) -> None:
        self._api = api
        self.host = host
        self.timeout = timeout
        self.at_once = at_once

    @property
    def api_version(self) -> str:
        return str(self._api.api_version)

    def server(self) -> str:
        """`Docker 20.10.24 (API 1.41)`, or why it cannot be said."""
        try:
            answer = self._api.version(api_version=False)
        except _errors() as failure:
            return f"version unknown ({describe_failure(failure)})"
        return f"Docker {answer.get('Version', '?')} (API {self.api_version})"

    def find(
        self, *, label: Optional[str] = None, names: Sequence[str] = (), running: bool = True
    ) -> Found:
        """Containers with the label (`key` or `key=value`) and, when `names` are given,
        one of those names exactly; only running ones unless `running` is False."""
        filters: Dict[str, Any] = {}
        if label:
            filters["label"] = [label]
        if names:
            filters["name"] = list(names)  # the daemon matches part of a name: checked below
        try:
            listed = self._api.containers(all=not running, filters=filters)
        except _errors() as failure:
            return Found([], describe_failure(failure))
        found = [_summary(item) for item in listed]
        if names:
            found = [c for c in found if c.name in names]
        return Found(found)

    def inspect(self, container_id: str) -> Tuple[Optional[Details], str]:
        """The container's details; (None, "") when it is gone, (None, why) on a failure."""
        from docker.errors import NotFound

        try:
            data = self._api.inspect_container(container_id)
        except NotFound:
            return None, ""
        except _errors() as failure:
            return None, describe_failure(failure)
        state = data.get("State") or {}
        running = bool(state.get("Running"))
        policy = ((data.get("HostConfig") or {}).get("RestartPolicy") or {}).get("Name") or "no"
        return (
            Details(
                id=str(data.get("Id", container_id)),
                name=str(data.get("Name", "")).lstrip("/"),
                running=running,
                labels=dict((data.get("Config") or {}).get("Labels") or {}),
                exit_code=None if running else state.get("ExitCode"),
                restart_policy=str(policy),
            ),
            "",
        )

    def stop(self, container_ids: Sequence[str], t: int) -> List[Stop]:
        """`POST /containers/{id}/stop?t=t` for each, all at once (up to `at_once`): SIGTERM
        (or the image's stop signal), SIGKILL after `t` seconds; each result once its
        container has exited, or its call failed or outlived `t` + `timeout`."""
        t = max(0, int(t))
        return self._each(container_ids, lambda cid: self._api.stop(cid, timeout=t))

    def wait_exited(self, container_ids: Sequence[str], seconds: float) -> List[Stop]:
        """Waits, for each at once, until it is not running (at most `seconds`)."""
        wait = cast(int, max(0.0, seconds))  # as in connect(): requests takes fractions
        return self._each(
            container_ids,
            lambda cid: self._api.wait(cid, timeout=wait, condition="not-running"),
        )

    def close(self) -> None:
        self._api.close()

    def _each(self, container_ids: Sequence[str], call: Callable[[str], object]) -> List[Stop]:
        if not container_ids:
            return []
        from docker.errors import NotFound

        errors = _errors()

        def one(cid: str) -> Stop:
            started = time.monotonic()
            try:
                call(cid)
            except NotFound:
                return Stop(cid, GONE, time.monotonic() - started)
            except errors as failure:
                return Stop(cid, FAILED, time.monotonic() - started, describe_failure(failure))
            return Stop(cid, EXITED, time.monotonic() - started)

        workers = max(1, min(self.at_once, len(container_ids)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="docker") as pool:
            return list(pool.map(one, container_ids))


def _summary(item: Mapping[str, Any]) -> Summary:
    names = item.get("Names") or [""]
    return Summary(
        id=str(item.get("Id", "")),
        name=str(names[0]).lstrip("/"),
        running=item.get("State") == "running",
        labels=dict(item.get("Labels") or {}),
    )
