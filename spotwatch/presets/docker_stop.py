"""`docker-stop`: stop the matching running containers through the Docker Engine API, all at
once, each with `t` = T - 5 seconds (at least 0) before the engine kills it; the hook ends
when all have stopped.

    with: {label: "com.example.role=worker", names: [db]}
    with: {docker_host: "tcp://127.0.0.1:2375"}          # neither label nor names: all

`label` and/or `names` choose the containers (a container matching either is stopped);
neither: every running container. The engine is reached at `docker_host` (default
`unix:///var/run/docker.sock`; `DOCKER_HOST` overrides the default) through the container
runtime client of spotwatch.parts.runtime, given as `Services.docker`. The 5 s that `t`
leaves are the engine's SIGKILL and the exit being reported before the hook's own end.
"""

from __future__ import annotations

import os
import re
from typing import Any, List, Mapping

from spotwatch.config.checks import leaf, unique_list
from spotwatch.config.values import matching
from spotwatch.presets.base import (
    FAILED,
    OK,
    TIMEOUT,
    Call,
    Preset,
    Requirement,
    Result,
    RuntimeUnavailable,
)

DEFAULT_HOST = "unix:///var/run/docker.sock"
KILL_MARGIN = 5  # seconds of T left after the engine's stop timeout
label_filter = matching(re.compile(r"[^=\s]+=\S*"), '"key=value"')
container_name = matching(re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]+"), "a container name")
docker_host = matching(re.compile(r"(unix|tcp)://\S+"), "unix:///PATH or tcp://HOST:PORT")


def host_of(args: Mapping[str, Any]) -> str:
    return str(args.get("docker_host") or os.environ.get("DOCKER_HOST") or DEFAULT_HOST)


class DockerStop(Preset):
    name = "docker-stop"
    summary = (
        "stops every matching running container concurrently through the Docker Engine API "
        "with t = T - 5; the hook ends when all have stopped"
    )
    arguments = {
        "label": leaf(label_filter),
        "names": unique_list(container_name, "container names"),
        "docker_host": leaf(docker_host),
    }

    def would(self, args: Mapping[str, Any], call: Call) -> str:
        t = stop_timeout(call)
        try:
            runtime = call.services.docker(host_of(args))
            try:
                found = runtime.running(args.get("label"), _names(args))
            finally:
                runtime.close()
            now = ", ".join(c.name for c in found) or "none running now"
        except RuntimeUnavailable as unavailable:
            now = f"cannot list them now: {unavailable}"
        return f"POST /containers/{{id}}/stop?t={t} at {host_of(args)} for {_which(args)} ({now})"

    def run(self, args: Mapping[str, Any], call: Call) -> Result:
        host, t = host_of(args), stop_timeout(call)
        try:
            runtime = call.services.docker(host)
        except RuntimeUnavailable as unavailable:
            return Result(FAILED, f"{host}: {unavailable}")
        try:
            found = runtime.running(args.get("label"), _names(args))
            if not found:
                return Result(OK, f"no running container matched {_which(args)}")
            stopped = runtime.stop_all(found, t)
        except RuntimeUnavailable as unavailable:
            return Result(FAILED, f"{host}: {unavailable}")
        finally:
            runtime.close()
        done = [s.container.name for s in stopped if s.ok]
        left = [f"{s.container.name}: {s.detail}" for s in stopped if not s.ok]
        said = f"stopped {len(done)} of {len(stopped)} containers with t={t}"
        if not left:
            return Result(OK, f"{said}: {', '.join(done)}")
        status = TIMEOUT if call.time_left() <= 0 else FAILED
        return Result(status, f"{said}; not stopped: {'; '.join(left)}")

    def requirements(self, args: Mapping[str, Any]) -> List[Requirement]:
        return [Requirement("docker", host_of(args))]


def stop_timeout(call: Call) -> int:
    """t = T - 5, at least 0: the engine's SIGKILL and the exit reported before the hook's end."""
    return max(0, call.seconds - KILL_MARGIN)


PRESET = DockerStop()


def _names(args: Mapping[str, Any]) -> List[str]:
    return list(args.get("names") or ())


def _which(args: Mapping[str, Any]) -> str:
    parts = []
    if args.get("label"):
        parts.append(f"label {args['label']}")
    if args.get("names"):
        parts.append("names " + ", ".join(args["names"]))
    return " or ".join(parts) or "every running container"
