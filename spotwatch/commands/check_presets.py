"""`check` for preset hooks: each preset's prerequisites, found the way the daemon would find
them (CONTRACT §9): the program on the daemon's PATH (or `bin`), the unit known to systemd,
the PID file, the Docker Engine answering at its host, the bucket (HeadBucket), the URL's host
(resolved, and answering on its port).

A prerequisite that names a `${placeholder}` is known only when a notice comes; `check` says
so instead of guessing.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from typing import Callable, Dict, Iterable
from urllib.parse import urlsplit

from spotwatch.clouds.registry import settle
from spotwatch.commands.results import ERROR, OK, WARNING, CheckResult
from spotwatch.config.schema import Config, HookSpec
from spotwatch.config.values import safe_url
from spotwatch.daemon.wiring import aws_clients
from spotwatch.parts.awsapi.bounded import within
from spotwatch.parts.awsapi.clients import api_errors, describe_error, error_code
from spotwatch.parts.presetservices import DaemonServices
from spotwatch.presets.base import Requirement, RuntimeUnavailable, find_program
from spotwatch.presets.process_signal import pid_from_file
from spotwatch.presets.registry import PRESETS

PROBE_TIMEOUT = 3.0
Probe = Callable[[str, DaemonServices], CheckResult]


def check_preset_hook(
    hook: HookSpec, services: DaemonServices, user_problem: str
) -> Iterable[CheckResult]:
    """One line for the hook, then one per prerequisite of its preset."""
    assert hook.preset is not None
    name = f"hook:{hook.name}"
    preset = PRESETS[hook.preset]
    if user_problem and preset.runs_programs:
        yield CheckResult(name, ERROR, user_problem)
    else:
        yield CheckResult(
            name, OK, f"preset {preset.name} ({', '.join(hook.actions)}; {hook.timeout:g} s)"
        )
    for requirement in preset.requirements(hook.arguments):
        started = time.monotonic()
        if "${" in requirement.target:
            result = CheckResult(
                name, OK, f"{requirement.kind} {_shown(requirement)}: known only at a notice"
            )
        else:
            result = PROBES[requirement.kind](requirement.target, services)
            result = CheckResult(name, result.status, result.detail)
        yield CheckResult(result.name, result.status, result.detail, time.monotonic() - started)


def _shown(requirement: Requirement) -> str:
    return safe_url(requirement.target) if requirement.kind == "url" else requirement.target


def program(target: str, services: DaemonServices) -> CheckResult:
    found = find_program(target)
    if found.path is None:
        return CheckResult("", ERROR, found.problem)
    return CheckResult("", OK, f"{target}: {found.path}")


def unit(target: str, services: DaemonServices) -> CheckResult:
    systemctl = shutil.which("systemctl")
    if systemctl is None:
        return CheckResult("", ERROR, f"{target}: systemctl not found, cannot ask systemd")
    try:
        done = subprocess.run(
            [systemctl, "show", "-p", "LoadState", "-p", "ActiveState", target],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT,
        )
    except (OSError, subprocess.SubprocessError) as failure:
        return CheckResult("", ERROR, f"{target}: systemctl show: {failure}")
    props: Dict[str, str] = dict(
        line.split("=", 1) for line in done.stdout.splitlines() if "=" in line
    )
    load = props.get("LoadState", "")
    if done.returncode != 0 or load != "loaded":
        why = load or (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        return CheckResult("", ERROR, f"unit {target}: {why[:200]}")
    return CheckResult("", OK, f"unit {target}: loaded, {props.get('ActiveState', '?')}")


def pidfile(target: str, services: DaemonServices) -> CheckResult:
    found = pid_from_file(target)
    if isinstance(found, str):
        # The service may write it when it starts: a warning, not a failure.
        return CheckResult("", WARNING, f"pidfile {found}")
    return CheckResult("", OK, f"pidfile {target}: {found}")


def docker(target: str, services: DaemonServices) -> CheckResult:
    try:
        runtime = services.docker(target)
    except RuntimeUnavailable as why:
        return CheckResult("", ERROR, f"Docker Engine at {target}: {why}")
    try:
        return CheckResult("", OK, f"Docker Engine at {target}: {runtime.version()}")
    finally:
        runtime.close()


def bucket(target: str, services: DaemonServices) -> CheckResult:
    try:
        services.clients.bounded(within(2 * PROBE_TIMEOUT)).call("s3", "head_bucket", Bucket=target)
    except api_errors() as failure:
        code = error_code(failure)
        why = {"404": "no such bucket", "403": "access denied (s3:ListBucket)"}.get(code, "")
        return CheckResult("", ERROR, f"bucket {target}: {why or describe_error(failure)}")
    return CheckResult("", OK, f"bucket {target}: HeadBucket allowed")


def url(target: str, services: DaemonServices) -> CheckResult:
    shown = safe_url(target)
    parts = urlsplit(target)
    host = parts.hostname or ""
    port: int = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as failure:
        return CheckResult("", ERROR, f"{shown}: the host does not resolve ({failure})")
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT):
            pass
    except OSError as failure:
        return CheckResult(
            "", WARNING, f"{shown}: resolves, but nothing answers on port {port} now ({failure})"
        )
    return CheckResult("", OK, f"{shown}: answers ({addresses[0][4][0]}:{port})")


PROBES: Dict[str, Probe] = {
    "program": program,
    "unit": unit,
    "pidfile": pidfile,
    "docker": docker,
    "bucket": bucket,
    "url": url,
}


def preset_services(config: Config) -> DaemonServices:
    cloud = settle(config).cloud
    return DaemonServices(aws_clients(config), lambda: cloud.node_name(config))
