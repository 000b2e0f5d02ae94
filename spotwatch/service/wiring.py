"""Which optional parts a daemon gets, decided from the config in one place."""

from __future__ import annotations

from typing import TYPE_CHECKING

from spotwatch.config.schema import Config
from spotwatch.service.daemon import DaemonHooks

if TYPE_CHECKING:
    from spotwatch.service.telemetry import Telemetry


def add_telemetry(hooks: DaemonHooks, config: Config) -> Telemetry:
    """Metrics (textfile, /metrics, /healthz) and webhook events on the daemon's seams."""
    from spotwatch.service.telemetry import Telemetry

    telemetry = Telemetry(config)
    hooks.on_start.append(telemetry.bind)
    hooks.on_poll.append(telemetry.on_poll)
    hooks.on_notice.append(telemetry.on_notice)
    hooks.journals.append(telemetry.journal)
    return telemetry


def daemon_hooks(config: Config) -> DaemonHooks:
    """The seams of the daemon filled for this config (ECS, hibernation, telemetry)."""
    hooks = DaemonHooks()
    add_telemetry(hooks, config)
    return hooks
