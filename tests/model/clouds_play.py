"""Play one Google Cloud or Azure sequence against the real daemon and judge it; runs of
seeds (shrinking, the report) are model_play.run_seeds with this player."""

from __future__ import annotations

import shutil
from pathlib import Path

from clouds_driver import CloudWorld
from clouds_invariants import check
from clouds_signals import CloudSettings
from clouds_world import AwsForbidden
from model_play import Outcome, play_world
from model_sequences import Played

REPLAY = (
    "SPOTWATCH_CLOUDS_REPLAY={cloud}:{{name}} "
    ".venvs/3.13/bin/python -m pytest tests/model/test_clouds_combinations.py -k replay -s"
)


def play(played: Played, forbidden: AwsForbidden, folder: Path) -> Outcome:
    settings = played.settings
    assert isinstance(settings, CloudSettings)
    outcome = play_world(played, folder, lambda: CloudWorld(settings, forbidden, folder), check)
    if outcome.violations:  # kept for a look (the daemon's log, the hooks' lines, its state)
        kept = folder.parent / f"failed-{played.name.replace(',', '_')}"
        shutil.rmtree(kept, ignore_errors=True)
        shutil.copytree(folder, kept, ignore=shutil.ignore_patterns("*.sock"))
    return outcome
