"""`spotwatch check`: validate the config, then run every preflight check.

A preflight is a function from the config to `CheckResult`s. Parts of the service add
theirs to `PREFLIGHTS`; each says ok, warning or error with a one-line reason. Exit status:
0 when nothing is an error (warnings allowed), 1 when a check failed, 78 for a bad config.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable, Iterable, List, Optional

from spotwatch.config.errors import ConfigError
from spotwatch.config.schema import Config
from spotwatch.detection.imds import ImdsClient, ImdsError

OK, WARNING, ERROR = "ok", "warning", "error"
EX_OK, EX_FAILED, EX_CONFIG = 0, 1, 78


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: str  # ok | warning | error
    detail: str
    seconds: Optional[float] = None


Preflight = Callable[[Config], Iterable[CheckResult]]


def check_imds(config: Config) -> Iterable[CheckResult]:
    client = ImdsClient(
        config.imds.endpoint,
        timeout=config.imds.timeout,
        token_ttl=60,
        allow_imdsv1=config.imds.allow_imdsv1,
    )
    started = time.monotonic()
    try:
        reply = client.get("meta-data/instance-id", deadline=started + 3 * config.imds.timeout)
    except ImdsError as failure:
        yield CheckResult("imds", ERROR, f"{config.imds.endpoint}: {failure}")
        return
    finally:
        client.close()
    took = time.monotonic() - started
    if reply.status != 200:
        yield CheckResult("imds", ERROR, f"instance-id answered HTTP {reply.status}", took)
        return
    how = "with an IMDSv2 token" if client.token_renewals else "WITHOUT a token (IMDSv1)"
    instance = reply.body.decode("ascii", "replace").strip()[:40]
    status = OK if client.token_renewals else WARNING
    yield CheckResult("imds", status, f"{instance} answered {how} in {took * 1000:.0f} ms", took)


def check_hooks(config: Config) -> Iterable[CheckResult]:
    if not config.hooks:
        yield CheckResult("hooks", WARNING, "no hooks configured: a notice only gets ECS/instance steps")
    for hook in config.hooks:
        program = hook.argv()[0]
        found = program if os.path.isabs(program) else shutil.which(program, path=_hook_path())
        name = f"hook:{hook.name}"
        if found is None or not os.path.exists(found):
            yield CheckResult(name, ERROR, f"{program}: not found")
        elif not os.access(found, os.X_OK) or os.path.isdir(found):
            yield CheckResult(name, ERROR, f"{found}: not executable")
        else:
            yield CheckResult(name, OK, f"{found} ({', '.join(hook.actions)}; {hook.timeout:g} s)")


def _hook_path() -> str:
    from spotwatch.response.hooks import MINIMAL_PATH

    return MINIMAL_PATH


def check_state_dir(config: Config) -> Iterable[CheckResult]:
    folder = config.state_dir
    probe = folder
    while not os.path.exists(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    if os.access(probe, os.W_OK):
        yield CheckResult("state_dir", OK, f"{folder} is writable")
    else:
        yield CheckResult("state_dir", ERROR, f"{folder}: not writable by uid {os.geteuid()}")


def check_ecs(config: Config) -> Iterable[CheckResult]:
    """ECS agent, cluster and container instance; ECS mixed with hibernation."""
    from spotwatch.service.check_aws import ecs_checks  # boto3 only when checking

    return ecs_checks(config)


def check_instance_action(config: Config) -> Iterable[CheckResult]:
    """`instance.*`: may we stop / hibernate / terminate this instance? (DryRun=True)"""
    from spotwatch.service.check_aws import instance_checks

    return instance_checks(config)


PREFLIGHTS: List[Preflight] = [
    check_imds,
    check_hooks,
    check_state_dir,
    check_ecs,
    check_instance_action,
]


def check_hibernation(config: Config) -> Iterable[CheckResult]:
    """Hibernation readiness (spotwatch.service.hibernation_check; imported late: it needs
    this module's names)."""
    from spotwatch.service.hibernation_check import check_hibernation as run

    return run(config)


PREFLIGHTS.append(check_hibernation)


def run_check(path: Optional[str], *, as_json: bool) -> int:
    from spotwatch.service.settings import load_service_config

    try:
        config = load_service_config(path)
    except ConfigError as problems:
        for line in problems.problems:
            print(line, file=sys.stderr)
        if as_json:
            print(json.dumps({"ok": False, "config_errors": problems.problems, "checks": []}))
        return EX_CONFIG
    results: List[CheckResult] = [CheckResult("config", OK, "valid: " + " < ".join(config.sources))]
    for preflight in PREFLIGHTS:
        results.extend(preflight(config))
    failed = any(r.status == ERROR for r in results)
    if as_json:
        print(json.dumps({"ok": not failed, "checks": [asdict(r) for r in results]}, indent=1))
    else:
        print(render_table(results))
    return EX_FAILED if failed else EX_OK


def render_table(results: List[CheckResult]) -> str:
    marks = {OK: "ok", WARNING: "WARN", ERROR: "FAIL"}
    width = max(len(r.name) for r in results)
    return "\n".join(f"{marks[r.status]:<4}  {r.name:<{width}}  {r.detail}" for r in results)
