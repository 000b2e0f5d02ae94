"""`shutdown:` (CONTRACT §8) in `spotwatch check`, and what `run` and `check` require of it.

With `shutdown.enabled: true`, logind must answer on the system bus: otherwise `run` and
`check` fail as for a bad config (exit 78), naming the cause. The preflight then says how
long logind lets a delay lock hold a shutdown back (`InhibitDelayMaxUSec`, warning when it is
shorter than `shutdown.budget`) and whether spotwatch holds its lock (`ListInhibitors`).
"""

from __future__ import annotations

import time
from typing import Iterable, List, Optional

from spotwatch.commands.results import OK, WARNING, CheckResult
from spotwatch.config.errors import ConfigError
from spotwatch.config.schema import Config
from spotwatch.host.logind import (
    NOT_HELD,
    WHO,
    Inhibitor,
    LogindBus,
    LogindError,
    system_bus_address,
)

DROP_IN = "/usr/lib/systemd/logind.conf.d/spotwatch.conf"
NAME = "shutdown"


def shutdown_problem(config: Config) -> Optional[str]:
    """Why `shutdown.enabled: true` cannot be honoured here, or None."""
    if config.shutdown.enabled is not True:
        return None
    try:
        bus = LogindBus.connect()
        try:
            bus.delay_max()  # logind itself answers, not merely a bus
        finally:
            bus.close()
    except LogindError as failure:
        return f"shutdown.enabled: true, but {failure}"
    return None


def require_shutdown(config: Config) -> Config:
    """`config`, or ConfigError (exit 78) when it asks for a lock it cannot have."""
    problem = shutdown_problem(config)
    if problem is not None:
        raise ConfigError(problem)
    return config


def check_shutdown(config: Config) -> Iterable[CheckResult]:
    settings = config.shutdown
    if settings.enabled is False:
        yield CheckResult(NAME, OK, "off (shutdown.enabled: false)")
        return
    if settings.budget <= config.deadline_margin:
        yield CheckResult(
            NAME,
            WARNING,
            f"shutdown.budget {settings.budget:g} s is not longer than deadline_margin "
            f"{config.deadline_margin:g} s: a shutdown response would start past its deadline",
        )
    started = time.monotonic()
    try:
        bus = LogindBus.connect()
        try:
            limit = bus.delay_max()
            inhibitors = bus.inhibitors()
        finally:
            bus.close()
    except LogindError as failure:  # auto (`true` was refused before the preflights ran)
        yield CheckResult(NAME, WARNING, f"off (auto): {failure}; {NOT_HELD}")
        return
    yield from _verdicts(limit, inhibitors, settings.budget, time.monotonic() - started)


def _verdicts(
    limit: float, inhibitors: List[Inhibitor], budget: float, took: float
) -> Iterable[CheckResult]:
    if limit < budget:
        yield CheckResult(
            f"{NAME}:delay",
            WARNING,
            f"logind's InhibitDelayMaxSec is {limit:g} s, shorter than shutdown.budget "
            f"{budget:g} s: a shutdown goes on after {limit:g} s whatever runs (the package's "
            f"{DROP_IN} raises it; logind reads it at boot or on SIGHUP)",
            took,
        )
    else:
        yield CheckResult(
            f"{NAME}:delay",
            OK,
            f"logind holds a shutdown back up to {limit:g} s (shutdown.budget {budget:g} s)",
            took,
        )
    ours = [
        i
        for i in inhibitors
        if i.who == WHO and i.mode == "delay" and "shutdown" in i.what.split(":")
    ]
    if ours:
        pids = ", ".join(str(i.pid) for i in ours)
        yield CheckResult(f"{NAME}:lock", OK, f"the shutdown delay lock is held (pid {pids})")
    else:
        yield CheckResult(
            f"{NAME}:lock",
            WARNING,
            f"the shutdown delay lock is not held on {system_bus_address()}: is spotwatch "
            "running? (systemctl status spotwatch)",
        )
