"""The one registration of the clouds, and the choice among them.

A new cloud is a folder of its own (clouds/<name>/, a `Cloud` in its cloud.py) and one entry
in `CLOUDS` (its name also goes into config's `CLOUD_NAMES`, which `cloud:` is checked
against; tests/clouds/test_registry.py keeps the two equal). Nothing else names a cloud.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Dict, Optional, Tuple

from spotwatch.clouds.aws.cloud import AWS
from spotwatch.clouds.azure.cloud import AZURE
from spotwatch.clouds.cloud import Cloud
from spotwatch.clouds.confine import confine
from spotwatch.clouds.dmi import DmiFacts, read_dmi
from spotwatch.clouds.gcp.cloud import GCP
from spotwatch.config.schema import Config

CLOUDS: Dict[str, Cloud] = {cloud.name: cloud for cloud in (AWS, GCP, AZURE)}
# `cloud: auto` on a machine whose firmware names none of them.
FALLBACK = AWS


@dataclass(frozen=True)
class Settled:
    """Which cloud the daemon runs on, why, and the config it runs on there."""

    cloud: Cloud
    why: str  # "configured (cloud: gcp)" or what the firmware said
    config: Config  # `cloud` named, and what the cloud lacks turned off
    notes: Tuple[str, ...]  # AWS-only parts that were configured, one line each


def settle(config: Config, dmi: Optional[DmiFacts] = None) -> Settled:
    """The cloud `config` names, or for `cloud: auto` the one the firmware names (read from
    /sys/class/dmi/id unless `dmi` is given), else AWS."""
    if config.cloud in CLOUDS:
        cloud, why = CLOUDS[config.cloud], f"configured (cloud: {config.cloud})"
    else:
        cloud, why = detect(dmi or read_dmi())
    confined, notes = confine(config, cloud.lacks, cloud.name)
    return Settled(cloud, why, replace(confined, cloud=cloud.name), tuple(notes))


def detect(dmi: DmiFacts) -> Tuple[Cloud, str]:
    for cloud in CLOUDS.values():
        why = cloud.recognizes(dmi)
        if why is not None:
            return cloud, f"auto: {why}"
    return FALLBACK, f"auto: no cloud named by the firmware ({dmi.summary()}), so {FALLBACK.name}"
