"""The cloud the daemon runs on, kept across reloads (clouds/registry.py chooses it).

Which cloud and why, the config the daemon runs on there (what the cloud lacks turned off),
and the AWS-only parts the operator configured there: each said once, at start or when a
reload first brings it, never an error.
"""

from __future__ import annotations

import logging
from typing import Callable, Tuple

from spotwatch.clouds.cloud import Cloud
from spotwatch.clouds.registry import Settled
from spotwatch.config.schema import Config
from spotwatch.logevents import emit

log = logging.getLogger("spotwatch.daemon")


class OnCloud:
    def __init__(self, settle: Callable[[Config], Settled], config: Config) -> None:
        self._settle = settle
        settled = settle(config)
        self.cloud: Cloud = settled.cloud
        self.why = settled.why
        self.config = settled.config
        self._notes: Tuple[str, ...] = settled.notes

    def say_where(self) -> None:
        """At start: the cloud, why, and every AWS-only part configured on it."""
        cloud = self.cloud
        emit(log, logging.INFO, "cloud", f"on {cloud.title} ({self.why})", cloud=cloud.name)
        self._say(self._notes)

    def settle(self, fresh: Config) -> Tuple[Config, bool]:
        """A reloaded config as the daemon runs on it, and whether the metadata client and
        the monitors must be built again (the cloud, or a setting they are built from,
        changed)."""
        old, old_cloud = self.config, self.cloud
        settled = self._settle(fresh)
        self.cloud, self.why, self.config = settled.cloud, settled.why, settled.config
        self._say(tuple(n for n in settled.notes if n not in self._notes))
        self._notes = settled.notes
        watched = ("cloud", *self.cloud.settings)
        rebuild = self.cloud is not old_cloud or any(
            getattr(self.config, name) != getattr(old, name) for name in watched
        )
        return self.config, rebuild

    def _say(self, notes: Tuple[str, ...]) -> None:
        for note in notes:
            emit(log, logging.WARNING, "aws-only-off", note, cloud=self.cloud.name)
