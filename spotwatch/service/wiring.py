"""Which optional parts a daemon gets, decided from the config in one place."""

from __future__ import annotations

from spotwatch.config.schema import Config
from spotwatch.response.hibernate import add_hibernate_trigger
from spotwatch.service.daemon import DaemonHooks
from spotwatch.service.state import HibernateLedger


def daemon_hooks(config: Config) -> DaemonHooks:
    """The seams of the daemon filled for this config (ECS, hibernation, telemetry)."""
    hooks = DaemonHooks()
    hooks.providers = add_hibernate_trigger(hooks.providers, HibernateLedger)  # §5 trigger
    return hooks
