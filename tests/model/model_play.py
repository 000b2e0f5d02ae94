"""Play sequences against the real daemon and judge them: one sequence (`play`), or a run of
seeds with shrinking and a report (`run_seeds`), as the tests and the long run use them."""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from contract_aws import check
from contract_invariants import Violation
from model_driver import World, can_change_boot
from model_host import Host
from model_sequences import Played, generate, shrink
from model_trace import Trace
from model_world import AwsEndpoint

Player = Callable[[Played, Path], "Outcome"]  # plays one sequence in a folder
REPLAY = "SPOTWATCH_MODEL_REPLAY={name} .venvs/3.13/bin/python -m pytest tests/model -k replay -s"


@dataclass
class Outcome:
    played: Played
    violations: List[Violation]
    trace: Trace
    seconds: float

    def invariants(self) -> List[str]:
        return sorted({v.invariant for v in self.violations})


@dataclass
class Finding:
    original: Outcome
    shrunk: Outcome
    replays: int
    command: str = REPLAY  # the replay command, {name} the shrunk sequence's

    def report(self) -> str:
        lines = [
            f"sequence {self.original.played.name} broke {', '.join(self.original.invariants())}",
            *[f"  - {v}" for v in self.original.violations],
            f"shrunk in {self.replays} replays to:",
            self.shrunk.played.describe(),
            *[f"  - {v}" for v in self.shrunk.violations],
            "replay: " + self.command.format(name=self.shrunk.played.name),
        ]
        return "\n".join(lines)


@dataclass
class RunReport:
    sequences: int = 0
    seconds: float = 0.0
    findings: List[Finding] = field(default_factory=list)
    by_invariant: Dict[str, List[str]] = field(default_factory=dict)

    def summary(self) -> str:
        head = f"{self.sequences} sequences in {self.seconds:.0f} s, {len(self.findings)} failed"
        found = [
            f"  {name}: seeds {', '.join(seeds)}"
            for name, seeds in sorted(self.by_invariant.items())
        ]
        return "\n".join([head, *found])

    def as_json(self) -> Dict[str, object]:
        return {
            "sequences": self.sequences,
            "seconds": round(self.seconds, 1),
            "failed": len(self.findings),
            "by_invariant": self.by_invariant,
            "findings": [
                {
                    "seed": f.original.played.name,
                    "shrunk": f.shrunk.played.name,
                    "violations": [str(v) for v in f.shrunk.violations],
                }
                for f in self.findings
            ],
        }


def play(played: Played, moto_url: str, aws: AwsEndpoint, host: Host, folder: Path) -> Outcome:
    return play_world(
        played, folder, lambda: World(played.settings, moto_url, aws, host, folder), check
    )


def play_world(
    played: Played,
    folder: Path,
    make_world: Callable[[], World],
    judge: Callable[[Trace, Any], Tuple[Any, List[Violation]]],
) -> Outcome:
    """Play `played` in a fresh `folder` in the world `make_world` builds there; `judge` it."""
    started = time.monotonic()
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    world = make_world()
    try:
        world.begin()
        for event in played.events:
            world.apply(event)
    finally:
        trace = world.finish()
    _, violations = judge(trace, played.settings)
    return Outcome(played, violations, trace, time.monotonic() - started)


def run_seeds(
    seeds: List[int],
    moto_url: str,
    aws: AwsEndpoint,
    host: Host,
    folder: Path,
    *,
    shrink_budget: int = 8,
    report_path: Optional[str] = None,
    player: Optional[Player] = None,
    generator: Optional[Callable[..., Played]] = None,
    command: str = REPLAY,
) -> RunReport:
    """Play each seed; shrink each failure (bounded); gather what broke which invariant.
    Another cloud's model gives its own `player`, `generator` and replay `command`."""
    can_boot = not can_change_boot()
    report = RunReport()
    started = time.monotonic()
    play_one: Player = player or (lambda p, f: play(p, moto_url, aws, host, f))
    for seed in seeds:
        if generator is None:
            played = generate(seed, can_boot=can_boot, has_docker=host.docker is not None)
        else:
            played = generator(seed, can_boot=can_boot)
        outcome = play_one(played, folder / "seq")
        report.sequences += 1
        print(
            f"seed {seed}: {outcome.seconds:.1f} s, {len(outcome.violations)} violations",
            flush=True,
        )
        if outcome.violations:
            finding = shrunk(outcome, play_one, folder, shrink_budget, can_boot, generator)
            finding.command = command
            report.findings.append(finding)
            print(finding.report(), flush=True)
            for name in outcome.invariants():
                report.by_invariant.setdefault(name, []).append(str(seed))
        report.seconds = time.monotonic() - started
        if report_path:
            Path(report_path).write_text(json.dumps(report.as_json(), indent=1))
    return report


def shrunk(
    outcome: Outcome,
    play_one: Player,
    folder: Path,
    budget: int,
    can_boot: bool,
    generator: Optional[Callable[..., Played]] = None,
) -> Finding:
    """The smallest sequence (within `budget` replays) that still breaks an invariant the
    original broke."""
    wanted = set(outcome.invariants())
    last: Dict[str, Outcome] = {}

    def fails(candidate: Played) -> bool:
        again = play_one(candidate, folder / "shrink")
        if wanted & set(again.invariants()):
            last["found"] = again
            return True
        return False

    best, replays = shrink(
        outcome.played, fails, budget=budget, can_boot=can_boot, generator=generator
    )
    kept = last.get("found")
    return Finding(outcome, kept if kept is not None and kept.played == best else outcome, replays)


def seeds_wanted(ci: int, long: int) -> List[int]:
    """Which seeds this run plays: `SPOTWATCH_MODEL_SEEDS=A-B` or `=A,B,C`, else the first
    `long` seeds in the long mode (`SPOTWATCH_LONG=1`), else the first `ci` (this
    interpreter's share of them in CI: `ci_share`)."""
    given = os.environ.get("SPOTWATCH_MODEL_SEEDS", "")
    if "-" in given:
        first, last = given.split("-", 1)
        return list(range(int(first), int(last) + 1))
    if given:
        return [int(s) for s in given.split(",")]
    long_mode = os.environ.get("SPOTWATCH_LONG", "") not in ("", "0")
    if long_mode:
        return list(range(long))
    return ci_share(list(range(ci)), os.environ.get("SPOTWATCH_MODEL_SHARE", ""))


def ci_share(seeds: List[int], share: str) -> List[int]:
    """The CI seeds one interpreter plays when `SPOTWATCH_MODEL_SHARE=K/N` (scripts/test
    gives its K-th of N interpreters that): every N-th from the K-th, so the interpreters
    play every CI seed between them, each in about 1/N of the time, and the stories taken
    in turn by seed spread over all of them. Without it: every seed."""
    if not share:
        return seeds
    k, n = (int(part) for part in share.split("/", 1))
    return [seed for index, seed in enumerate(seeds) if index % n == k - 1]
