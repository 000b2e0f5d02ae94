"""What the state directory holds, as types: one schema for the daemon that writes it and
for `status` and the sleep hook that read it (state/reader.py).

state.json (`StateDocument`) is keyed to one boot and one instance. `trackers` is the
de-duplication memory of each monitor (keyed by tracker: the monitor's name, or
`monitor/identity` for monitors that know several notices at once); `responses` holds one
record per notice handled (keyed by response: the tracker's key and the notice's generation
in it, so a changed action or a notice that came back gets a record of its own).
"""

from __future__ import annotations

from typing import Dict, FrozenSet, List, Literal, Optional, TypedDict, cast, get_args

FORMAT_VERSION = 1

StepStatus = Literal["pending", "running", "ok", "failed", "timeout", "skipped", "interrupted"]
PENDING: StepStatus = "pending"
RUNNING: StepStatus = "running"
OK: StepStatus = "ok"
FAILED: StepStatus = "failed"
TIMEOUT: StepStatus = "timeout"
SKIPPED: StepStatus = "skipped"
INTERRUPTED: StepStatus = "interrupted"
STEP_STATUSES: FrozenSet[str] = frozenset(get_args(StepStatus))
# A finished step is never run again for the same notice, not even after a restart.
FINISHED: FrozenSet[str] = frozenset({OK, FAILED, TIMEOUT, SKIPPED})


def step_status(value: str) -> StepStatus:
    """A status read back from a record; ValueError for anything else."""
    if value not in STEP_STATUSES:
        raise ValueError(f"not a step status: {value[:40]!r}")
    return cast(StepStatus, value)


PollResult = Literal["ok", "notice", "degraded", "error"]


class _NoticeRecordBase(TypedDict):
    action: str
    time: str
    source: str


class NoticeRecord(_NoticeRecordBase, total=False):
    event_id: str
    event_code: str
    canceled_action: str


class StepRecord(TypedDict):
    name: str
    kind: str
    status: StepStatus
    started: Optional[str]
    ended: Optional[str]
    detail: str


class _ResponseRecordBase(TypedDict):
    notice: NoticeRecord
    first_seen: Optional[str]
    deadline: Optional[str]
    done: bool
    steps: List[StepRecord]


class ResponseRecord(_ResponseRecordBase, total=False):
    tracker: str  # the tracker whose notice this answers
    ended: str
    why_ended: str  # set when it ended early: superseded, canceled, past its deadline


class TrackerRecord(TypedDict, total=False):
    known: Optional[NoticeRecord]
    absent_polls: int
    generation: int


class WaitingRecord(TypedDict):
    """A scheduled event whose response waits for its moment (daemon/scheduled.py)."""

    key: str  # the response record it will get
    notice: NoticeRecord
    starts: Optional[str]  # when its response starts: NotBefore - scheduled_events.lead
    deadline: Optional[str]


class _StateDocumentBase(TypedDict):
    version: int
    boot_id: str
    instance_id: Optional[str]
    trackers: Dict[str, TrackerRecord]
    responses: Dict[str, ResponseRecord]


class StateDocument(_StateDocumentBase, total=False):
    previous: Dict[str, object]  # what an earlier boot (or instance) left, set aside
    resume_generation: int
    # One end, one response: a response key -> the key of the response it joined.
    joins: Dict[str, str]
    start_boot: str  # the boot whose `start` response has begun (daemon/boot.py)
    waiting: Dict[str, WaitingRecord]  # tracker -> a scheduled event whose response waits


class PollRecord(TypedDict):
    time: Optional[str]
    result: str
    last_success: Optional[str]
