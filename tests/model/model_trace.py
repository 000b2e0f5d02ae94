"""What one played sequence leaves behind, in the terms the contract speaks of.

The driver (model_driver.py) fills a `Trace` while it plays a sequence against the real
daemon; the model (contract_model.py) reads it to say what the contract promises, and the
invariants (contract_invariants.py) compare that with what happened. Every time is wall
time (Unix seconds): hooks, the IMDS simulator and the AWS endpoint all stamp with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple


@dataclass(frozen=True)
class Shown:
    """One notice an IMDS answer showed. `what` is the signal's own word: the Spot action,
    `Terminated`, `rebalance`, or a scheduled event's Code; `state` is a scheduled event's
    State (active, canceled, completed)."""

    what: str
    time_text: str = ""  # as IMDS wrote it
    epoch: float = 0.0
    event_id: str = ""
    state: str = ""
    source: str = ""  # when not the signal's own (the termination-time fallback)


@dataclass(frozen=True)
class Answer:
    """A usable IMDS answer to the daemon's polling (what a poll could see), per signal."""

    t: float
    signal: str  # a key of contract_model.SIGNALS
    shown: Tuple[Shown, ...] = ()
    # The actions whose absence this answer vouches for (None: all). §3: the
    # termination-time fallback knows terminate notices only.
    speaks_for: Optional[Tuple[str, ...]] = None


@dataclass(frozen=True)
class Lifetime:
    """One run of the daemon process: when it started and how it ended."""

    started: float
    boot: int
    ended: Optional[float] = None
    how: str = ""  # sigterm | kill | "" (still running)
    exit_code: Optional[int] = None
    signalled: Optional[float] = None  # when SIGTERM or SIGKILL was sent


@dataclass(frozen=True)
class HookRun:
    """One hook process: its start and end as it wrote them, and its SPOTWATCH_* environment."""

    name: str
    started: float
    ended: Optional[float]
    env: Dict[str, str]
    stopped: bool = False  # SIGTERM cut it short (a shutdown's end, or its time limit)

    @property
    def action(self) -> str:
        return self.env.get("SPOTWATCH_ACTION", "")

    @property
    def source(self) -> str:
        return self.env.get("SPOTWATCH_SOURCE", "")


@dataclass(frozen=True)
class AwsCall:
    """One AWS request the endpoint received (a throttled answer included, marked so)."""

    t: float
    service: str
    operation: str
    params: Dict[str, Any]
    throttled: bool = False
    status: int = 200

    @property
    def ok(self) -> bool:
        return not self.throttled and self.status < 300


@dataclass(frozen=True)
class StatusShot:
    """`spotwatch status --json` at a checkpoint, and what the driver knew then."""

    t: float
    doc: Optional[Dict[str, Any]]
    exit_code: int
    after: str  # "checkpoint", "sigterm" (the daemon had just exited), "end"


@dataclass(frozen=True)
class WorldEvent:
    """What the driver did to the world, as played (`args` as the generator gave them)."""

    t: float
    kind: str
    args: Tuple[Any, ...] = ()


@dataclass(frozen=True)
class LockSpan:
    """One logind delay lock the daemon held (§8), in wall time (None: still held)."""

    taken: float
    released: Optional[float]
    who: str = "spotwatch"


@dataclass(frozen=True)
class Announcement:
    """logind's PrepareForShutdown: True, a shutdown is coming; False, it was called off."""

    t: float
    active: bool


@dataclass
class Trace:
    """Everything observed while one sequence was played."""

    settings: Dict[str, Any]  # contract_model.Settings fields, as the config said
    events: List[WorldEvent] = field(default_factory=list)
    answers: List[Answer] = field(default_factory=list)
    lifetimes: List[Lifetime] = field(default_factory=list)
    hooks: List[HookRun] = field(default_factory=list)
    calls: List[AwsCall] = field(default_factory=list)
    statuses: List[StatusShot] = field(default_factory=list)
    instance_id: str = ""
    ecs_final: str = ""  # the container instance's status at the end (ACTIVE, DRAINING)
    registered_final: bool = True  # the instance still in the target group at the end
    task_stops: List[float] = field(default_factory=list)  # when a task was told to stop
    log_problems: List[str] = field(default_factory=list)  # tracebacks in the daemon's log
    logind: bool = False  # logind answered on the bus the daemon sees (§8: the lock is owed)
    locks: List[LockSpan] = field(default_factory=list)
    announcements: List[Announcement] = field(default_factory=list)
    ended: float = 0.0  # when the driver stopped watching

    def boot_of(self, moment: float) -> int:
        """The boot a moment belongs to (boots change only between daemon lifetimes)."""
        boot = 0
        for life in self.lifetimes:
            if life.started <= moment + 1e-6:
                boot = life.boot
        return boot

    def up(self, start: float, end: float) -> bool:
        """Was a daemon running, and not yet told to stop, during the whole of [start, end]?"""
        for life in self.lifetimes:
            stop = life.signalled or life.ended or float("inf")
            if life.started <= start and end <= stop:
                return True
        return False

    def downs(self, start: float, end: float) -> List[Lifetime]:
        """Lifetimes that ended (by SIGTERM or kill) within [start, end]."""
        return [
            life for life in self.lifetimes if life.ended is not None and start <= life.ended <= end
        ]
