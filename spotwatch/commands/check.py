"""`spotwatch check`: validate the config, then run every preflight check.

A preflight is a function from the config to `CheckResult`s. Parts of the service add
theirs to `PREFLIGHTS`; each says ok, warning or error with a one-line reason. Exit status:
0 when nothing is an error (warnings allowed), 1 when a check failed, 78 for a bad config.

First it says which cloud spotwatch runs on and why (`cloud:` or what the firmware says),
and which AWS-only parts are configured there (a warning, never an error); the preflights of
parts the cloud lacks are not run (`ONLY_ON_AWS`), and the others run on the config the
daemon would run on (clouds/registry.py).
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import sys
import time
from dataclasses import asdict
from email.utils import parsedate_to_datetime
from typing import Dict, Iterable, List, Optional
from urllib.parse import urlsplit

from spotwatch.clouds.confine import (
    AUTO_SCALING,
    EC2_HIBERNATION,
    ECS,
    INSTANCE_ACTION,
    LOAD_BALANCERS,
    AwsOnly,
)
from spotwatch.clouds.registry import Settled, settle
from spotwatch.commands.check_asg import autoscaling_checks
from spotwatch.commands.check_aws import ecs_checks, instance_checks
from spotwatch.commands.check_events import check_events
from spotwatch.commands.check_hibernation import check_hibernation as hibernation_readiness
from spotwatch.commands.check_lb import check_load_balancers
from spotwatch.commands.check_presets import check_preset_hook, preset_services
from spotwatch.commands.check_shutdown import check_shutdown, require_shutdown
from spotwatch.commands.results import ERROR, OK, WARNING, CheckResult, Preflight
from spotwatch.commands.settings import load_service_config
from spotwatch.config.errors import ConfigError
from spotwatch.config.schema import Config
from spotwatch.exits import EX_CONFIG, EX_FAILURE, EX_OK
from spotwatch.host import logs
from spotwatch.response.hooks import MINIMAL_PATH, UserError, resolve_user


def check_imds(config: Config) -> Iterable[CheckResult]:
    """The cloud's metadata service gives this VM's id (AWS: with an IMDSv2 token)."""
    cloud = settle(config).cloud
    client = cloud.client(config)
    started = time.monotonic()
    try:
        instance, why = cloud.instance_id(client, client.now() + 3 * client.timeout)
    finally:
        client.close()
    took = time.monotonic() - started
    if instance is None:
        yield CheckResult("imds", ERROR, f"{client.endpoint}: {why}", took)
        return
    renewals = getattr(client, "token_renewals", None)
    if renewals == 0:  # AWS's IMDS answered without a session token
        detail = f"{instance} answered WITHOUT a token (IMDSv1) in {took * 1000:.0f} ms"
        yield CheckResult("imds", WARNING, detail, took)
        return
    how = " with an IMDSv2 token" if renewals else ""
    yield CheckResult("imds", OK, f"{instance} answered{how} in {took * 1000:.0f} ms", took)


def check_hooks(config: Config) -> Iterable[CheckResult]:
    if not config.hooks:
        yield CheckResult(
            "hooks", WARNING, "no hooks configured: a notice only gets ECS/instance steps"
        )
    services = preset_services(config) if any(h.preset for h in config.hooks) else None
    for hook in config.hooks:
        if hook.preset is not None:
            assert services is not None
            yield from check_preset_hook(hook, services, _user_problem(hook.user))
            continue
        program = hook.argv()[0]
        found = program if os.path.isabs(program) else shutil.which(program, path=_hook_path())
        name = f"hook:{hook.name}"
        user_problem = _user_problem(hook.user)
        if user_problem:
            yield CheckResult(name, ERROR, user_problem)
        elif found is None or not os.path.exists(found):
            yield CheckResult(name, ERROR, f"{program}: not found")
        elif not os.access(found, os.X_OK) or os.path.isdir(found):
            yield CheckResult(name, ERROR, f"{found}: not executable")
        else:
            yield CheckResult(name, OK, f"{found} ({', '.join(hook.actions)}; {hook.timeout:g} s)")


def _user_problem(user: object) -> str:
    """Why a hook's `user:` cannot be run as, or "" (none set, or the user exists)."""
    if user is None:
        return ""
    try:
        resolve_user(user)
    except UserError as failure:
        return f"user: {failure} (the hook would fail at every notice)"
    return ""


def _hook_path() -> str:

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

    return ecs_checks(config)


def check_instance_action(config: Config) -> Iterable[CheckResult]:
    """`instance.*`: may we stop / hibernate / terminate this instance? (DryRun=True)"""

    return instance_checks(config)


CLOCK_WARN = 5.0  # seconds of skew that shorten (or stretch) every hook's time
CLOCK_ERROR = 60.0  # half the two-minute warning: the deadline arithmetic is meaningless


def check_clock(config: Config) -> Iterable[CheckResult]:
    """Compare the wall clock with the metadata service's HTTP Date header: the deadline is
    the notice time (the cloud's clock) minus the margin, measured on ours, so a skewed clock
    moves every deadline."""
    endpoint, method, path, headers = settle(config).cloud.date_probe(config)
    parts = urlsplit(endpoint)
    conn = http.client.HTTPConnection(
        parts.hostname or "169.254.169.254", parts.port or 80, timeout=config.imds.timeout
    )
    before = time.time()
    started = time.monotonic()
    try:
        conn.request(method, path, headers=headers)
        response = conn.getresponse()
        response.read()
        date = response.getheader("Date")
    except (OSError, http.client.HTTPException) as failure:
        yield CheckResult("clock", WARNING, f"not compared: IMDS did not answer ({failure})")
        return
    finally:
        conn.close()
    took = time.monotonic() - started
    try:
        theirs = parsedate_to_datetime(date).timestamp() if date else None
    except (TypeError, ValueError):
        theirs = None
    if theirs is None:
        yield CheckResult("clock", OK, "not compared: IMDS sent no Date header", took)
        return
    # Date has whole seconds: their clock read somewhere in [theirs, theirs + 1).
    skew = (before + took / 2) - (theirs + 0.5)
    uncertainty = 0.5 + took / 2
    detail = (
        f"{abs(skew):.1f} s {'ahead of' if skew > 0 else 'behind'} IMDS (+/- {uncertainty:.1f} s)"
    )
    if abs(skew) - uncertainty > CLOCK_ERROR:
        status, detail = ERROR, detail + ": every deadline is off by that much; fix time sync"
    elif abs(skew) - uncertainty > CLOCK_WARN:
        status, detail = WARNING, detail + ": hooks get that much more or less time; check chrony"
    else:
        status = OK
    yield CheckResult("clock", status, detail, took)


PREFLIGHTS: List[Preflight] = [
    check_imds,
    check_clock,
    check_hooks,
    check_state_dir,
    check_ecs,
    check_instance_action,
]


def run_preflight(preflight: Preflight, config: Config) -> List[CheckResult]:
    """One preflight's results; a preflight that raises is reported as a failed check."""
    try:
        return list(preflight(config))
    except Exception as failure:
        name = getattr(preflight, "__name__", "preflight").replace("check_", "")
        return [CheckResult(name, ERROR, f"the check itself failed: {failure!r}")]


def check_hibernation(config: Config) -> Iterable[CheckResult]:
    """Hibernation readiness (spotwatch.commands.check_hibernation)."""
    return hibernation_readiness(config)


PREFLIGHTS.append(check_hibernation)
PREFLIGHTS.append(check_events)
PREFLIGHTS.append(autoscaling_checks)
PREFLIGHTS.append(check_load_balancers)
PREFLIGHTS.append(check_shutdown)
# The preflights of parts only AWS has: not run on a cloud that lacks the part.
ONLY_ON_AWS: Dict[Preflight, AwsOnly] = {
    check_ecs: ECS,
    check_instance_action: INSTANCE_ACTION,
    check_hibernation: EC2_HIBERNATION,
    autoscaling_checks: AUTO_SCALING,
    check_load_balancers: LOAD_BALANCERS,
}


def cloud_results(settled: Settled) -> List[CheckResult]:
    """Which cloud and why; each AWS-only part configured there (a warning, never an error)."""
    cloud = settled.cloud
    results = [CheckResult("cloud", OK, f"{cloud.name} ({cloud.title}): {settled.why}")]
    results += [CheckResult("cloud:aws-only", WARNING, note) for note in settled.notes]
    return results


def run_check(path: Optional[str], *, as_json: bool) -> int:

    logs.configure("warning")  # config and user-data warnings print as log lines on stderr
    try:
        config = require_shutdown(load_service_config(path))
    except ConfigError as problems:
        for line in problems.problems:
            print(line, file=sys.stderr)
        if as_json:
            print(json.dumps({"ok": False, "config_errors": problems.problems, "checks": []}))
        return EX_CONFIG
    results: List[CheckResult] = [CheckResult("config", OK, "valid: " + " < ".join(config.sources))]
    settled = settle(config)
    results += cloud_results(settled)
    for preflight in PREFLIGHTS:
        if ONLY_ON_AWS.get(preflight) in settled.cloud.lacks:
            continue
        results.extend(run_preflight(preflight, settled.config))
    failed = any(r.status == ERROR for r in results)
    if as_json:
        print(json.dumps({"ok": not failed, "checks": [asdict(r) for r in results]}, indent=1))
    else:
        print(render_table(results))
    return EX_FAILURE if failed else EX_OK


def render_table(results: List[CheckResult]) -> str:
    marks = {OK: "ok", WARNING: "WARN", ERROR: "FAIL"}
    width = max(len(r.name) for r in results)
    lines = [
        f"{marks.get(r.status, r.status):<4}  {r.name:<{width}}  {r.detail}"
        + (f" [{r.seconds * 1000:.0f} ms]" if r.seconds is not None and r.name != "imds" else "")
        for r in results
    ]
    errors = sum(r.status == ERROR for r in results)
    warnings = sum(r.status == WARNING for r in results)
    verdict = f"{errors} failed" if errors else "all checks passed"
    lines.append(f"{verdict}, {warnings} warning{'s' if warnings != 1 else ''}")
    return "\n".join(lines)
