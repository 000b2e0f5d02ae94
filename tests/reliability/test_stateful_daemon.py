"""The core promise, searched for counterexamples: never miss a notice, never handle one twice.

A hypothesis state machine drives the REAL daemon (in this process, poll by poll) with its
real IMDS client over real HTTP to an `ImdsSimulator`, its real state directory, and real
hook processes that append a line to a file. Between polls, the world changes at random:
notices appear, move, change action, disappear and come back; rebalance recommendations
come and go; polls meet 401s, 429s, 5xx, hangs, connection resets, malformed bodies,
revoked tokens and whole IMDS outages; the daemon is restarted on the same state directory;
the machine sleeps (the daemon's CLOCK_BOOTTIME/CLOCK_MONOTONIC seam jumps).

A model of CONTRACT.md §3 runs beside it and predicts how often each hook has run; after
every step the hook file must agree exactly. That exact agreement carries the invariants:
- a notice seen by a successful poll is handled (its hook ran) by the end of that poll, so
  every notice that stays visible for 2 polls is handled;
- none is handled twice: only a changed action, 3 consecutive successful polls without
  it, or a resume make it new again;
- a restart re-runs no finished step (the hook count does not move on restart);
- no exception escapes a poll, and none is caught by a safety net (logged with a
  traceback or as "unexpected").

What a poll could see is decided by the client's own retries (a fault may be retried away,
or push the monitor to its termination-time fallback): the model reads which paths the
client asked and whether the poll succeeded, and predicts from that. A fallback answer
(termination-time) can only speak for terminate notices, so it is no evidence that a stop
or hibernate notice went away; a malformed body is no answer at all.

Cadence (the poll grid) is a timing property, so it is not checked here, where polls are
stepped by hand for determinism: see test_resources.py::test_cadence_stays_on_the_grid.
"""

from __future__ import annotations

import collections
import shutil
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Counter, List, Optional, Tuple

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from relsupport import (
    LONG,
    Clocks,
    ErrorRecords,
    append_hook,
    base_config,
    lines,
    record_stats,
    suite_settings,
    write_config,
)

from spotwatch.clouds.aws.imds import ImdsClient, Reply
from spotwatch.clouds.aws.monitors import TERMINATION_TIME
from spotwatch.commands.settings import load_service_config
from spotwatch.daemon.shell import Daemon, DaemonParts
from spotwatch.detection.tracker import ABSENT_POLLS_TO_FORGET
from spotwatch.simulator.imds import (
    INSTANCE_ACTION_PATH,
    REBALANCE_PATH,
    ImdsSimulator,
    format_time,
)

POLL_BUDGET = 0.3  # each poll's deadline; a poll that cannot succeed costs this long
HOOK_OF = {
    "terminate": "on_terminate",
    "stop": "on_stop",
    "hibernate": "on_hibernate",
    "rebalance": "on_rebalance",
    "resume": "on_resume",
}
FAULTS = (
    "401",  # one request answered 401: renew the token, retry
    "revoke",  # every token forgotten: the next request is a 401
    "429",
    "500",
    "hang",  # one request answered after the client's timeout
    "reset",  # one connection dropped with a RST
    "ia-503",  # instance-action broken for the whole poll: the termination-time fallback
    "ia-malformed",  # instance-action answers 200 with garbage for the whole poll
    "rebalance-503",
    "rebalance-malformed",
    "all-503",  # everything broken: the poll fails
    "outage",  # the simulator is down: connection refused
)
MALFORMED = st.one_of(
    st.sampled_from(
        [
            b"",
            b"{",
            b"[]",
            b"null",
            b'{"action": "explode", "time": "2030-01-01T00:00:00Z"}',
            b'{"action": "stop"}',
            b'{"action": "stop", "time": "yesterday"}',
            b'{"action": "stop", "time": "2030-02-30T00:00:00Z"}',
            b'{"noticeTime": 5}',
            b"\xff\xfe\x00",
            b"[" * 5000,
        ]
    ),
    st.binary(max_size=64),
)


CHANGES = st.one_of(
    st.just(("nothing",)),
    st.tuples(
        st.just("notice"),
        st.sampled_from(["terminate", "stop", "hibernate"]),
        st.sampled_from([-60, 30, 90, 600]),  # seconds ahead; a past time is handled too
    ),
    st.just(("clear",)),
    st.tuples(st.just("rebalance"), st.sampled_from([0, 300])),
    st.just(("rebalance-clear",)),
    st.just(("restart",)),
    st.tuples(st.just("sleep"), st.sampled_from([5.0, 3600.0])),
)


def in_seconds(seconds: int) -> str:
    return format_time(datetime.now(timezone.utc) + timedelta(seconds=seconds))


class TrackerModel:
    """CONTRACT.md §3 for one monitor: what is known, and for how many polls it was absent."""

    def __init__(self) -> None:
        self.known: Optional[str] = None  # the action of the known notice
        self.absent = 0

    def observe(self, seen: Optional[str]) -> bool:
        """One conclusive observation; True when it is a new notice (to be handled)."""
        if seen is None:
            if self.known is not None:
                self.absent += 1
                if self.absent >= ABSENT_POLLS_TO_FORGET:
                    self.known, self.absent = None, 0
            return False
        self.absent = 0
        if self.known == seen:
            return False
        self.known = seen
        return True

    def rearm(self) -> None:
        self.known, self.absent = None, 0


class Asked:
    """Wraps a client's `get` to learn which paths a poll asked and what they answered."""

    def __init__(self, client: ImdsClient) -> None:
        self.paths: List[Tuple[str, Optional[int]]] = []
        real = client.get

        def get(path: str, *, deadline: Optional[float] = None) -> Reply:
            try:
                reply = real(path, deadline=deadline)
            except Exception:
                self.paths.append((path, None))
                raise
            self.paths.append((path, reply.status))
            return reply

        client.get = get  # type: ignore[method-assign]

    def answered(self, path: str) -> List[Optional[int]]:
        return [status for asked, status in self.paths if asked == path]


class DaemonMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="spotwatch-stateful-"))
        self.out = self.dir / "hooks.out"
        self.sim = ImdsSimulator().start()
        hooks = [append_hook(name, self.out, [action]) for action, name in HOOK_OF.items()]
        config = base_config(
            self.dir / "state",
            self.sim.endpoint,
            hooks,
            poll_interval="2s",
            imds={"endpoint": self.sim.endpoint, "timeout": "100ms", "user_data": False},
        )
        self.config_path = write_config(self.dir / "config.yaml", config)
        self.config = load_service_config(str(self.config_path), env={}, with_user_data=False)
        self.clocks = Clocks()
        self.errors = ErrorRecords().__enter__()
        self.daemon = self._new_daemon()
        # The world
        self.notice: Optional[Tuple[str, str]] = None  # (action, time) in instance-action
        self.rebalance: Optional[str] = None
        self.jump_pending = False
        # The model
        self.spot = TrackerModel()
        self.rebal = TrackerModel()
        self.expected: Counter[str] = collections.Counter()
        self.polls = self.faults = self.restarts = self.steps = 0

    def _new_daemon(self) -> Daemon:
        daemon = Daemon(self.config, parts=DaemonParts(), clock_pair=self.clocks)
        daemon.prepare()
        self.asked = Asked(daemon.client)
        return daemon

    def teardown(self) -> None:
        record_stats(
            "stateful",
            examples=1,
            steps=self.steps,
            polls=self.polls,
            faults=self.faults,
            restarts=self.restarts,
            handled=sum(self.expected.values()),
        )
        try:
            self.daemon.shutdown()
        finally:
            self.errors.__exit__()
            self.sim.stop()
            shutil.rmtree(self.dir, ignore_errors=True)

    @initialize()
    def start(self) -> None:
        pass

    # ------------------------------------------------------------------ the world changes

    def notice_appears_or_moves(self, action: str, lead: int) -> None:
        """A new notice, the same one with a moved time, or a changed action."""
        when = in_seconds(lead)
        self.sim.set_instance_action(action, when)
        self.notice = (action, when)

    def notice_disappears(self) -> None:
        self.sim.clear_instance_action()
        self.notice = None

    def rebalance_appears_or_moves(self, lead: int) -> None:
        when = in_seconds(lead)
        self.sim.set_rebalance(when)
        self.rebalance = when

    def rebalance_disappears(self) -> None:
        self.sim.set_rebalance(None)
        self.rebalance = None

    def restart(self) -> None:
        """Stop the daemon (cleanly here; kill -9 is test_crash.py's) and start a new one on
        the same state directory: nothing known may be forgotten, nothing finished re-run."""
        self.daemon.shutdown()
        self.daemon = self._new_daemon()
        self.jump_pending = False  # the new daemon takes the clocks as it finds them
        self.restarts += 1

    def machine_sleeps(self, seconds: float) -> None:
        """CLOCK_BOOTTIME gains on CLOCK_MONOTONIC: a resume from hibernation."""
        self.clocks.asleep += seconds
        self.jump_pending = True

    # ------------------------------------------------------------------ one step: change, poll

    @rule(change=CHANGES, fault=st.one_of(st.none(), st.sampled_from(FAULTS)), body=MALFORMED)
    def step(self, change: Tuple[Any, ...], fault: Optional[str], body: bytes) -> None:
        """Something happens in the world (or nothing), then one poll, maybe meeting a fault.
        (Every step polls: several changes between two polls add nothing a poll could see.)"""
        kind = change[0]
        if kind == "notice":
            self.notice_appears_or_moves(change[1], change[2])
        elif kind == "clear":
            self.notice_disappears()
        elif kind == "rebalance":
            self.rebalance_appears_or_moves(change[1])
        elif kind == "rebalance-clear":
            self.rebalance_disappears()
        elif kind == "restart":
            self.restart()
        elif kind == "sleep":
            self.machine_sleeps(change[1])
        self._poll(fault, body)

    def _poll(self, fault: Optional[str], body: bytes) -> None:
        sim = self.sim
        if fault == "401":
            sim.inject_status(401)
        elif fault == "revoke":
            sim.revoke_tokens()
        elif fault in ("429", "500"):
            sim.inject_status(int(fault))
        elif fault == "hang":
            sim.inject_hang(0.15)
        elif fault == "reset":
            sim.inject_reset()
        elif fault == "ia-503":
            sim.inject_status(503, path=INSTANCE_ACTION_PATH, count=None)
        elif fault == "ia-malformed":
            sim.set_path(INSTANCE_ACTION_PATH, 200, body)
        elif fault == "rebalance-503":
            sim.inject_status(503, path=REBALANCE_PATH, count=None)
        elif fault == "rebalance-malformed":
            sim.set_path(REBALANCE_PATH, 200, body)
        elif fault == "all-503":
            sim.inject_status(503, count=None)
        elif fault == "outage":
            sim.stop()
        self.faults += fault is not None
        self.asked.paths.clear()
        watcher = self.daemon.watcher
        assert watcher is not None
        try:
            report = watcher.poll_once(deadline=time.monotonic() + POLL_BUDGET)
            assert self.daemon.responder.wait(30), "a response did not end"
        finally:
            if fault == "outage":
                sim.start()
            sim.clear_faults()
            sim.clear_path(INSTANCE_ACTION_PATH)
            sim.clear_path(REBALANCE_PATH)
        self.polls += 1
        if fault is None:
            assert report.ok, f"a clean poll failed: {report.errors}"
        self._predict(report.ok, report.errors, fault)

    def _predict(self, spot_ok: bool, errors: Tuple[str, ...], fault: Optional[str]) -> None:
        if spot_ok:
            seen = self.notice[0] if self.notice else None
            if TERMINATION_TIME in [p for p, _ in self.asked.paths]:
                # The fallback only knows terminate notices: its "none" says nothing about a
                # stop or hibernate notice (nor does it see one that is there).
                seen = "terminate" if seen == "terminate" else None
                if seen is None and self.spot.known not in (None, "terminate"):
                    seen = "inconclusive"
            if seen != "inconclusive" and self.spot.observe(seen):
                self.expected[HOOK_OF[seen]] += 1  # type: ignore[index]
        rebalance_ok = not any(e.startswith("rebalance") for e in errors)
        usable = rebalance_ok and fault != "rebalance-malformed"  # garbled: no evidence
        if usable and self.rebal.observe("rebalance" if self.rebalance else None):
            self.expected[HOOK_OF["rebalance"]] += 1
        if self.jump_pending:
            self.jump_pending = False
            self.spot.rearm()
            self.rebal.rearm()
            self.expected[HOOK_OF["resume"]] += 1

    # ------------------------------------------------------------------ invariants

    @invariant()
    def hooks_ran_as_the_model_says(self) -> None:
        self.steps += 1
        ran: Counter[str] = collections.Counter(line.split()[0] for line in lines(self.out))
        assert ran == self.expected, (
            f"hooks ran {dict(ran)}, the model expects {dict(self.expected)}; "
            f"spot known={self.spot.known} absent={self.spot.absent}; asked={self.asked.paths}"
        )

    @invariant()
    def nothing_escaped_or_was_caught(self) -> None:
        assert not self.errors.records, self.errors.texts()


DaemonMachine.TestCase.settings = suite_settings(
    ci_examples=25, long_examples=400, stateful_step_count=60 if LONG else 30
)
TestDaemonMachine = DaemonMachine.TestCase
