"""Google Cloud and Azure signals in combination, against the REAL daemon: seeded sequences
(clouds_sequences.py) on each cloud's metadata simulator, played by the AWS model's driver
and judged by its model and invariants plus the clouds' own (clouds_invariants.py).

In CI a few seeds per cloud run (the first stories: a minute in all); `SPOTWATCH_LONG=1`
plays 100 per cloud; `SPOTWATCH_MODEL_SEEDS=A-B` any range. A failure prints its seed, the
shrunk sequence and the one command that replays it: `SPOTWATCH_CLOUDS_REPLAY=gcp:SEED:i,j`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest
from clouds_play import REPLAY, play
from clouds_sequences import generator, parse
from clouds_world import AwsForbidden
from model_driver import can_change_boot
from model_play import run_seeds, seeds_wanted

# Seeds 0-1 on each cloud (a sequence: 8-16 s): about 55 s in all per Python on a loaded
# 2-core machine (measured: 3.13 and 3.9, docs/testing.md).
CI_SEQUENCES = {"gcp": 2, "azure": 2}
LONG_SEQUENCES = 100


@pytest.fixture(scope="module")
def forbidden() -> Iterator[AwsForbidden]:
    server = AwsForbidden()
    try:
        yield server
    finally:
        server.close()


@pytest.mark.parametrize("cloud", ["gcp", "azure"])
def test_cloud_sequences_keep_the_contract(
    cloud: str, forbidden: AwsForbidden, tmp_path: Path
) -> None:
    """Every invariant holds over every sequence played on the cloud (none is weakened to
    pass: a finding names the invariant, the shrunk sequence and its replay command)."""
    report = run_seeds(
        seeds_wanted(CI_SEQUENCES[cloud], LONG_SEQUENCES),
        "",
        None,  # type: ignore[arg-type]  # no AWS and no host in this world: the player needs none
        None,  # type: ignore[arg-type]
        tmp_path,
        report_path=os.environ.get("SPOTWATCH_MODEL_REPORT", "").replace("{cloud}", cloud) or None,
        shrink_budget=int(os.environ.get("SPOTWATCH_MODEL_SHRINK", "8")),
        player=lambda played, folder: play(played, forbidden, folder),
        generator=generator(cloud),
        command=REPLAY.format(cloud=cloud),
    )
    print(report.summary())
    assert not report.findings, "\n\n".join(f.report() for f in report.findings)


@pytest.mark.skipif(not os.environ.get("SPOTWATCH_CLOUDS_REPLAY"), reason="nothing to replay")
def test_clouds_replay(forbidden: AwsForbidden, tmp_path: Path) -> None:
    """Plays the one sequence `SPOTWATCH_CLOUDS_REPLAY=CLOUD:SEED[:i,j,k]` names, and prints
    what the daemon did."""
    played = parse(os.environ["SPOTWATCH_CLOUDS_REPLAY"], can_boot=not can_change_boot())
    outcome = play(played, forbidden, tmp_path / "replay")
    print(played.describe())
    origin = outcome.trace.events[0].t if outcome.trace.events else 0.0
    for run in outcome.trace.hooks:
        print(f"  hook {run.name} {run.started - origin:+.2f}s {run.env}")
    for t, event in getattr(outcome.trace, "approvals", []):
        print(f"  StartRequests {event} {t - origin:+.2f}s")
    problems = "\n".join(str(v) for v in outcome.violations)
    assert not outcome.violations, problems
