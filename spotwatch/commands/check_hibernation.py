"""`spotwatch check`: is this instance ready to hibernate?

Runs only when hibernation concerns this config: a hook subscribes to `hibernate` or
`resume`, `hibernate.trigger` is `command`, `instance.after_response` is `hibernate`, or
IMDS says `hibernation/configured` is true. The default `trigger: auto` alone does not count:
it is the default on every instance, most of which never hibernate, and would only add noise.
Otherwise one ok line says hibernation is not in use.

Each check is ok / warning / error with a one-line reason:
- `hibernation:configured`  IMDS `meta-data/hibernation/configured` (false: EC2 stops instead)
- `hibernation:ram`         MemTotal within EC2's limit for Linux (150 GB)
- `hibernation:swap`        active swap (or the agent's swap file) at least the size of RAM
- `hibernation:resume`      `resume=` on the kernel command line
- `hibernation:agent`       the hibinit agent installed and enabled
- `hibernation:acpid`       acpid installed and enabled, with a sleep handler
- `hibernation:ecs`         ECS and hibernation do not mix

Everything is read under `Probes.root` (`/proc/meminfo` is `<root>/proc/meminfo`) and
systemd is asked through `Probes.systemctl`, so tests point both at a folder of their own.
"""

from __future__ import annotations

import os
import time
from typing import Iterable, List, Optional, Tuple

from spotwatch.clouds.aws.imds import ImdsClient, ImdsError
from spotwatch.commands.results import ERROR, OK, WARNING, CheckResult
from spotwatch.config.schema import Config
from spotwatch.parts.hibernate import Probes

# Linux instances with more RAM cannot hibernate (docs/aws-facts.md).
RAM_LIMIT_BYTES = 150 * 1024**3
AGENT_SWAP_FILES = ("swap", "swap-hibinit", "swapfile")  # where the hibinit agent puts it
ACPID_FILES = ("usr/sbin/acpid", "sbin/acpid", "usr/bin/acpid")


def check_hibernation(config: Config, probes: Optional[Probes] = None) -> Iterable[CheckResult]:
    where = probes or Probes()
    configured, configured_detail = _configured(config)
    reasons = _relevance(config, configured)
    if not reasons:
        yield CheckResult("hibernation", OK, "not in use (no hibernate/resume hooks or trigger)")
        return
    yield from _run_all(config, where, configured, configured_detail, reasons)


def _relevance(config: Config, configured: Optional[bool]) -> List[str]:
    reasons = []
    if any(a in ("hibernate", "resume") for h in config.hooks for a in h.actions):
        reasons.append("hooks for hibernate/resume")
    if config.hibernate.trigger == "command":
        reasons.append("hibernate.trigger is command")
    if config.instance.after_response == "hibernate":
        reasons.append("instance.after_response is hibernate")
    if configured:
        reasons.append("the instance was launched with hibernation")
    return reasons


def _run_all(
    config: Config,
    where: Probes,
    configured: Optional[bool],
    configured_detail: str,
    reasons: List[str],
) -> Iterable[CheckResult]:
    why = "; ".join(reasons)
    if configured is True:
        yield CheckResult("hibernation:configured", OK, configured_detail)
    else:
        yield CheckResult("hibernation:configured", WARNING, f"{configured_detail} ({why})")
    ram = _meminfo_bytes(where, "MemTotal")
    yield _check_ram(ram)
    yield _check_swap(where, ram)
    yield _check_resume(where)
    yield _check_agent(where)
    yield _check_acpid(where)
    if config.ecs.enabled is True:
        yield CheckResult(
            "hibernation:ecs",
            WARNING,
            "ECS is enabled: EC2 cannot hibernate an instance used by ECS; it stops it instead",
        )


def _configured(config: Config) -> Tuple[Optional[bool], str]:
    client = ImdsClient.for_a_few_reads(config.imds)
    try:
        reply = client.get(
            "meta-data/hibernation/configured", deadline=time.monotonic() + 2 * config.imds.timeout
        )
    except ImdsError as failure:
        return None, f"hibernation/configured unknown: {failure}"
    finally:
        client.close()
    if reply.status == 200 and reply.body.strip().lower() == b"true":
        return True, "IMDS hibernation/configured: true"
    if reply.status in (200, 404):
        return False, "not launched with hibernation enabled: EC2 stops it instead of hibernating"
    return None, f"hibernation/configured answered HTTP {reply.status}"


def _read(where: Probes, relative: str) -> Optional[str]:
    try:
        with open(where.path(relative), encoding="utf-8", errors="replace") as handle:
            return handle.read(1024 * 1024)
    except OSError:
        return None


def _meminfo_bytes(where: Probes, field: str) -> Optional[int]:
    text = _read(where, "proc/meminfo") or ""
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name.strip() == field:
            parts = rest.split()
            if parts and parts[0].isdigit():
                return int(parts[0]) * 1024  # meminfo speaks kB
    return None


def _gib(value: int) -> str:
    return f"{value / 1024**3:.1f} GiB"


def _check_ram(ram: Optional[int]) -> CheckResult:
    if ram is None:
        return CheckResult("hibernation:ram", WARNING, "cannot read MemTotal from /proc/meminfo")
    if ram > RAM_LIMIT_BYTES:
        return CheckResult(
            "hibernation:ram", ERROR, f"{_gib(ram)} of RAM: Linux hibernation stops at 150 GB"
        )
    return CheckResult("hibernation:ram", OK, f"{_gib(ram)} of RAM (limit 150 GB)")


def _active_swap(where: Probes) -> int:
    text = _read(where, "proc/swaps") or ""
    total = 0
    for line in text.splitlines()[1:]:  # Filename Type Size Used Priority
        parts = line.split()
        if len(parts) >= 3 and parts[2].isdigit():
            total += int(parts[2]) * 1024
    return total


def _check_swap(where: Probes, ram: Optional[int]) -> CheckResult:
    if ram is None:
        return CheckResult("hibernation:swap", WARNING, "RAM size unknown; swap not judged")
    active = _active_swap(where)
    if active >= ram:
        return CheckResult("hibernation:swap", OK, f"{_gib(active)} of swap for {_gib(ram)} RAM")
    for name in AGENT_SWAP_FILES:  # the agent switches its swap file on only to hibernate
        try:
            size = os.path.getsize(where.path(name))
        except OSError:
            continue
        if size >= ram:
            return CheckResult(
                "hibernation:swap",
                OK,
                f"/{name} ({_gib(size)}) is switched on at hibernation; {_gib(ram)} RAM",
            )
    return CheckResult(
        "hibernation:swap",
        ERROR,
        f"{_gib(active)} of swap for {_gib(ram)} RAM: hibernation would fail and EC2 stop it",
    )


def _check_resume(where: Probes) -> CheckResult:
    text = _read(where, "proc/cmdline")
    if text is None:
        return CheckResult("hibernation:resume", WARNING, "cannot read /proc/cmdline")
    found = [w for w in text.split() if w.startswith("resume=")]
    if found:
        return CheckResult("hibernation:resume", OK, f"kernel command line has {found}")
    return CheckResult(
        "hibernation:resume",
        WARNING,
        "no resume= on the kernel command line: the image may not be found at boot",
    )


def _enabled(where: Probes, unit: str) -> Optional[str]:
    """`systemctl is-enabled unit`'s answer, or None when systemd cannot say."""
    answer = where.ask_systemctl("is-enabled", unit)
    words = answer[1].split() if answer is not None else []
    return words[0] if words else None


def _check_agent(where: Probes) -> CheckResult:
    found = where.hibinit()
    if found is None:
        return CheckResult(
            "hibernation:agent",
            WARNING,
            "the hibinit agent (ec2-hibinit-agent) is not installed: EC2's hibernation needs it",
        )
    state = _enabled(where, "hibinit-agent.service")
    if state in ("enabled", "static", "alias", "indirect", "generated"):
        return CheckResult("hibernation:agent", OK, f"{found} installed, unit {state}")
    if state is None:
        return CheckResult("hibernation:agent", OK, f"{found} installed (unit state unknown)")
    return CheckResult("hibernation:agent", WARNING, f"{found} installed but unit is {state}")


def _check_acpid(where: Probes) -> CheckResult:
    binary = next((f"/{p}" for p in ACPID_FILES if os.path.exists(where.path(p))), None)
    if binary is None:
        return CheckResult(
            "hibernation:acpid",
            WARNING,
            "acpid is not installed: EC2's sleep-button event will not reach systemd",
        )
    handler = where.acpi_handler()
    state = _enabled(where, "acpid.service")
    if state is not None and state not in ("enabled", "static", "alias", "indirect", "generated"):
        return CheckResult("hibernation:acpid", WARNING, f"{binary} installed but unit is {state}")
    if handler is None:
        return CheckResult("hibernation:acpid", WARNING, f"{binary} has no sleep handler")
    return CheckResult(
        "hibernation:acpid", OK, f"{binary} ({state or 'state unknown'}), handler {handler}"
    )
