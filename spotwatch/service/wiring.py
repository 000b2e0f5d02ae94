"""Which optional parts a daemon gets, decided from the config in one place."""

from __future__ import annotations

from spotwatch.config.schema import Config
from spotwatch.service.daemon import DaemonHooks


def daemon_hooks(config: Config) -> DaemonHooks:
    """The seams of the daemon filled for this config (ECS, hibernation, telemetry)."""
    return DaemonHooks()
