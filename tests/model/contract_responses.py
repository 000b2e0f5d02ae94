"""What the model says there was: notices, responses, ends (§7), shutdowns (§8), and the
`Model` that gathers them. Plain data; contract_model.py's interpreter fills it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from contract_signals import Settings, Signal


@dataclass
class Notice:
    action: str
    epoch: float
    text: str
    event_id: str = ""
    code: str = ""
    source: str = ""  # when not its signal's own (a terminate seen through termination-time)


@dataclass
class Response:
    key: str
    tracker: str
    signal: Signal
    action: str
    boot: int
    notice: Notice
    first_seen: float
    start_at: Optional[float]  # when it is due to start (scheduled: NotBefore - lead)
    started: Optional[float] = None
    sightings: int = 0  # usable answers that showed it
    shown: List[Tuple[float, float, str]] = field(default_factory=list)  # (t, epoch, text)
    halted: Optional[float] = None  # superseded or canceled: starts no further step
    halt_why: str = ""
    withdrawn: Optional[float] = None  # its tracker forgot it
    end: Optional[End] = None
    joined: Optional[float] = None  # when it joined another signal's response (one end)
    canceled_action: str = ""  # for `cancel`
    uncertain: str = ""  # why the contract leaves its hooks open (empty: it does not)
    undo_of: Optional[Response] = None  # cancel: the canceled response
    source: str = ""  # SPOTWATCH_SOURCE

    def __post_init__(self) -> None:
        self.source = self.source or self.notice.source or self.signal.source

    def latest(self) -> Tuple[float, str]:
        """Its notice's time as it last stood (epoch, text)."""
        if self.shown:
            return self.shown[-1][1], self.shown[-1][2]
        return self.notice.epoch, self.notice.text

    def epoch_at(self, moment: float) -> float:
        """The newest notice time shown by `moment` (the deadline follows it, §3)."""
        seen = [epoch for t, epoch, _ in self.shown if t <= moment]
        return seen[-1] if seen else self.notice.epoch

    def epochs_near(self, moment: float, window: float) -> List[float]:
        """Notice times that may be the newest the daemon knew at `moment` (a poll in flight
        may still carry the one before)."""
        found = [epoch for t, epoch, _ in self.shown if moment - window <= t <= moment]
        return [*found, self.epoch_at(moment - window)]


@dataclass
class End:
    """One end of the instance (§7): the response that came first and those that joined it."""

    root: Response
    action: str
    members: List[Response] = field(default_factory=list)
    canceled: Optional[float] = None
    # A cancel of the first while another had joined it: that one runs what is left (§7).
    transferred: Optional[float] = None
    ever: List[Response] = field(default_factory=list)  # every member it had, canceled too
    # Why the contract leaves the whole end open (a notice came during a shutdown's own
    # response, §8 is silent on it): its hooks are then neither owed nor counted.
    uncertain: str = ""

    @property
    def began(self) -> float:
        return min(m.started or 0.0 for m in self.ever)

    def live_at(self, moment: float) -> bool:
        return self.canceled is None or self.canceled > moment


@dataclass
class Tracker:
    known: Optional[Notice] = None
    absent: int = 0
    response: Optional[Response] = None
    completed_seen: bool = False  # a scheduled event shown `completed`


@dataclass
class Shutdown:
    """One PrepareForShutdown(true) a daemon holding the lock heard (§8), and its answer:
    its own `shutdown` response, or the end response it waits for (running or ended)."""

    t: float
    boot: int
    response: Optional[Response] = None
    waits_for: Optional[End] = None
    called_off: Optional[float] = None
    uncertain: str = ""


@dataclass
class Model:
    settings: Settings
    responses: List[Response] = field(default_factory=list)
    ends: List[End] = field(default_factory=list)
    shutdowns: List[Shutdown] = field(default_factory=list)

    def of(self, action: str) -> List[Response]:
        return [r for r in self.responses if r.action == action]

    def of_waiting(self) -> List[Response]:
        """Responses that wait for their moment (scheduled events), cancels left out."""
        return [r for r in self.responses if r.signal.waits and r.action != "cancel"]
