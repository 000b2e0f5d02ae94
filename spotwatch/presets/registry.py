"""Every ready-made hook, by the name written after `preset:`.

Adding a preset is one module in this package (a `Preset` subclass and its `PRESET`) and its
line below; nothing else in spotwatch names a preset (tests/presets/test_preset_registry.py).
"""

from __future__ import annotations

from typing import Dict

from spotwatch.presets import (
    docker_stop,
    http_event,
    kubectl_drain,
    nomad_drain,
    process_signal,
    s3_sync,
    slurm_drain,
    systemd_stop,
)
from spotwatch.presets.base import Preset

PRESETS: Dict[str, Preset] = {
    preset.name: preset
    for preset in (
        process_signal.PRESET,
        systemd_stop.PRESET,
        docker_stop.PRESET,
        kubectl_drain.PRESET,
        nomad_drain.PRESET,
        slurm_drain.PRESET,
        s3_sync.PRESET,
        http_event.PRESET,
    )
}
