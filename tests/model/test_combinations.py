"""Signals in combination, against the REAL daemon: seeded sequences of world events
(model_sequences.py) played by the driver (model_driver.py) and judged by the model of
the contract (contract_model.py, contract_invariants.py, contract_aws.py).

In CI a fixed, bounded set of seeds runs (every story of the generator at least once, shared
out between the interpreters: model_play.ci_share);
`SPOTWATCH_LONG=1` plays 500; `SPOTWATCH_MODEL_SEEDS=A-B` any range. A failure prints its
seed, the shrunk sequence and the one command that replays it (docs/testing.md).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from model_driver import can_change_boot
from model_host import Host
from model_play import REPLAY, play, run_seeds, seeds_wanted
from model_sequences import STORIES, parse
from model_world import AwsEndpoint

CI_SEQUENCES = len(STORIES)  # every story once: 2-3 minutes on the 2-core CI machine
LONG_SEQUENCES = 500


def test_sequences_keep_the_contract(
    moto_url: str, aws: AwsEndpoint, host: Host, tmp_path: Path
) -> None:
    """Every invariant holds over every played sequence (none is weakened to pass: a
    finding names the invariant, the shrunk sequence and its replay command)."""
    report = run_seeds(
        seeds_wanted(CI_SEQUENCES, LONG_SEQUENCES),
        moto_url,
        aws,
        host,
        tmp_path,
        report_path=os.environ.get("SPOTWATCH_MODEL_REPORT"),
        shrink_budget=int(os.environ.get("SPOTWATCH_MODEL_SHRINK", "8")),
    )
    print(report.summary())
    assert not report.findings, "\n\n".join(f.report() for f in report.findings)


@pytest.mark.skipif(not os.environ.get("SPOTWATCH_MODEL_REPLAY"), reason="nothing to replay")
def test_replay(moto_url: str, aws: AwsEndpoint, host: Host, tmp_path: Path) -> None:
    """Plays the one sequence `SPOTWATCH_MODEL_REPLAY=SEED[:i,j,k]` names, and prints what
    the model and the daemon made of it."""
    played = parse(
        os.environ["SPOTWATCH_MODEL_REPLAY"],
        can_boot=not can_change_boot(),
        has_docker=host.docker is not None,
    )
    outcome = play(played, moto_url, aws, host, tmp_path / "replay")
    print(played.describe())
    for run in outcome.trace.hooks:
        print(f"  hook {run.name} {run.started - outcome.trace.events[0].t:+.2f}s {run.env}")
    origin = outcome.trace.events[0].t
    for call in outcome.trace.calls:
        status = call.params.get("status", "")  # UpdateContainerInstancesState's
        print(f"  {call.service} {call.t - origin:+.2f}s {call.operation} {status} {call.status}")
    for told in outcome.trace.announcements:
        print(f"  logind {told.t - origin:+.2f}s PrepareForShutdown({told.active})")
    for lock in outcome.trace.locks:
        let_go = "held" if lock.released is None else f"{lock.released - origin:+.2f}s"
        print(f"  lock {lock.taken - origin:+.2f}s .. {let_go}")
    problems = "\n".join(str(v) for v in outcome.violations)
    assert not outcome.violations, f"{problems}\nreplay: {REPLAY.format(name=played.name)}"
