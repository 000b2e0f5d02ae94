"""The response runner: stages, timed steps, finale, failures, shutdown and restarts.

Steps here are small Step subclasses that sleep and note the time, or real hooks; the
restart test kills a real daemon-like process with SIGKILL in the middle of a hook.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from response_support import (
    ListJournal,
    Records,
    context,
    live_group_members,
    move_notice,
    notice_in,
    read_floats,
    wait_for_file,
)

from spotwatch.config.schema import Config, HookSpec
from spotwatch.detection.notices import Notice
from spotwatch.response.build import build_plan, hook_stages
from spotwatch.response.deadline import NoticeClock
from spotwatch.response.journals import StoreJournal
from spotwatch.response.plan import Plan, Step, StepContext, StepOutcome, TimedStep
from spotwatch.response.runner import Runner
from spotwatch.state.schema import FAILED, INTERRUPTED, OK, RUNNING
from spotwatch.state.store import StateStore

REPO = Path(__file__).resolve().parents[2]


class Sleeper(Step):
    """Sleeps `seconds`, noting its start and end on the monotonic clock."""

    kind = "test"

    def __init__(self, name: str, seconds: float = 0.0) -> None:
        super().__init__(name)
        self.seconds = seconds
        self.started: Optional[float] = None
        self.ended: Optional[float] = None
        self.runs = 0

    def run(self, ctx: StepContext) -> StepOutcome:
        self.runs += 1
        self.started = time.monotonic()
        time.sleep(self.seconds)
        self.ended = time.monotonic()
        return StepOutcome(OK, f"slept {self.seconds}")


class Raiser(Step):
    kind = "test"

    def run(self, ctx: StepContext) -> StepOutcome:
        raise RuntimeError("boom")


def timed(step: Step, seconds_before_notice: float) -> TimedStep:
    """A step due `seconds_before_notice` before the notice time (as ECS's final stop is)."""
    return TimedStep(step, lambda clock: clock.monotonic_at(seconds_before_notice))


def test_timed_step_starts_at_its_moment() -> None:
    """A timed step starts at its moment before the notice time, not before, not much later."""
    ctx = context(2.0, margin=10.0)  # notice in 12 s; the step is due 10.8 s before: in 1.2 s
    step = Sleeper("final")
    begun = time.monotonic()
    Runner(Plan(ctx.notice, timed=[timed(step, 10.8)]), ctx, ListJournal()).run()
    assert step.started is not None
    assert 1.15 <= step.started - begun < 1.6, step.started - begun


def test_timed_step_follows_a_moved_notice_time() -> None:
    """When the notice time moves while a timed step waits, its start moves with it:
    later (1.2 s -> 2.4 s) and earlier (3 s -> 1 s)."""
    for first, moved, expected in ((2.0, 3.2, 2.4), (3.8, 1.8, 1.0)):
        ctx = context(first, margin=10.0)
        step = Sleeper("final")
        runner = Runner(Plan(ctx.notice, timed=[timed(step, 10.8)]), ctx, ListJournal())
        begun = time.monotonic()
        thread = runner.start()
        time.sleep(0.3)
        move_notice(ctx, moved - 0.3)
        thread.join(10)
        assert step.started is not None
        assert expected - 0.1 <= step.started - begun < expected + 0.5, (first, moved)


def test_finale_runs_after_stages_and_timed_steps() -> None:
    """The finale starts only once every stage and every timed step has ended; then the
    journal hears that the response ended, with every outcome."""
    ctx = context(2.0, margin=10.0)
    first, second = Sleeper("first", 0.3), Sleeper("second", 0.2)
    final_stop = Sleeper("final-stop", 0.3)
    finale = Sleeper("instance")
    plan = Plan(
        ctx.notice,
        stages=[(first,), (second,)],
        timed=[timed(final_stop, 11.4)],  # due in 0.6 s, after the stages
        finale=[(finale,)],
    )
    journal = ListJournal()
    outcomes = Runner(plan, ctx, journal).run()
    assert first.ended is not None and second.started is not None
    assert second.started >= first.ended
    assert finale.started is not None and final_stop.ended is not None and second.ended
    assert finale.started >= max(final_stop.ended, second.ended)
    assert set(outcomes) == {"first", "second", "final-stop", "instance"}
    assert journal.response_end == outcomes
    assert [name for name, _ in journal.started][-1] == "instance"


def test_a_raising_step_is_failed_and_the_others_go_on(records: Records) -> None:
    """A step that raises is recorded FAILED with the error; its parallel sibling, the next
    stage and the finale still run, and the journal gets an end for each."""
    ctx = context(30)
    sibling, later, last = Sleeper("sibling", 0.1), Sleeper("later"), Sleeper("last")
    plan = Plan(
        ctx.notice,
        stages=[(Raiser("raiser"), sibling), (later,)],
        finale=[(last,)],
    )
    journal = ListJournal()
    outcomes = Runner(plan, ctx, journal).run()
    assert outcomes["raiser"] == StepOutcome(FAILED, "internal error: RuntimeError('boom')")
    assert all(outcomes[n].status == OK for n in ("sibling", "later", "last"))
    assert sorted(e.step for e in journal.ended) == ["last", "later", "raiser", "sibling"]


def test_a_raising_start_moment_is_failed_and_the_others_go_on(records: Records) -> None:
    """A timed step whose start moment cannot be computed is FAILED, not left pending."""

    def broken(clock: NoticeClock) -> float:
        raise ValueError("no stop_timeout")

    ctx = context(30)
    plan = Plan(ctx.notice, stages=[(Sleeper("hooks"),)], timed=[TimedStep(Sleeper("x"), broken)])
    outcomes = Runner(plan, ctx, ListJournal()).run()
    assert outcomes["x"].status == FAILED and "no stop_timeout" in outcomes["x"].detail
    assert outcomes["hooks"].status == OK


def test_cancel_starts_nothing_new_but_running_steps_finish() -> None:
    """On ctx.cancel (daemon shutdown): the running stage step and the running timed step
    finish and are recorded; the next stage, a timed step not yet due and the finale never
    start; the response is not marked ended; run() returns once the running ones are done."""
    ctx = context(30, margin=10.0)  # notice in 40 s
    running = Sleeper("running", 0.8)
    never = Sleeper("next-stage")
    timed_running = Sleeper("timed-running", 1.2)
    timed_waiting = Sleeper("timed-waiting")
    finale = Sleeper("finale")
    plan = Plan(
        ctx.notice,
        stages=[(running,), (never,)],
        timed=[timed(timed_running, 39.8), timed(timed_waiting, 35)],  # due in 0.2 s / 5 s
        finale=[(finale,)],
    )
    journal = ListJournal()
    runner = Runner(plan, ctx, journal)
    begun = time.monotonic()
    thread = runner.start()
    time.sleep(0.5)
    ctx.cancel.set()
    thread.join(10)
    returned = time.monotonic() - begun
    assert not thread.is_alive()
    assert runner.outcomes["running"].status == OK
    assert runner.outcomes["timed-running"].status == OK
    assert timed_running.ended is not None and returned >= timed_running.ended - begun
    assert never.runs == timed_waiting.runs == finale.runs == 0
    assert set(runner.outcomes) == {"running", "timed-running"}
    assert journal.response_end is None
    assert returned < 3.0


def test_steps_finished_before_a_restart_are_not_rerun(records: Records) -> None:
    """Steps the journal knows as finished are recorded without running; an interrupted
    one runs again."""
    ctx = context(30)
    done, interrupted = Sleeper("done"), Sleeper("interrupted")
    journal = ListJournal(finished={"done": FAILED})
    outcomes = Runner(Plan(ctx.notice, stages=[(done,), (interrupted,)]), ctx, journal).run()
    assert done.runs == 0 and outcomes["done"] == StepOutcome(FAILED, "finished before a restart")
    assert interrupted.runs == 1 and outcomes["interrupted"].status == OK


def test_first_hook_process_starts_soon_after_the_runner(tmp_path: Path, records: Records) -> None:
    """From Runner.start() to the first hook's process running (its first command) takes
    well under half a second."""
    stamp = tmp_path / "stamp"
    ctx = context(60)
    plan = Plan(ctx.notice, stages=hook_stages([HookSpec("first", f"date +%s.%N > {stamp}")]))
    begun = time.time()
    Runner(plan, ctx, ListJournal()).start().join(10)
    latency = read_floats(str(stamp))[0] - begun
    print(f"runner start -> first hook process: {latency * 1000:.1f} ms")
    assert 0 <= latency < 0.5


# ----------------------------------------------------------------- restart after kill -9

FIRST_DAEMON = """
import json, sys
sys.path.insert(0, sys.argv[1])
from spotwatch.config.schema import Config, HookSpec
from spotwatch.detection.notices import Notice
from spotwatch.response.build import build_plan
from spotwatch.response.plan import StepContext
from spotwatch.response.deadline import NoticeClock
from spotwatch.response.runner import Runner
from spotwatch.state.store import StateStore
from spotwatch.response.journals import StoreJournal
args = json.loads(sys.argv[2])
notice = Notice.from_json(args["notice"])
config = Config(deadline_margin=10.0, hooks=tuple(HookSpec(**h) for h in args["hooks"]))
store = StateStore(args["state_dir"], boot_id="test-boot")
store.load("i-restart")
clock = NoticeClock(notice, config.deadline_margin)
plan = build_plan(notice, config)
steps = [(s.name, s.kind) for s in plan.all_steps()]
store.begin_response("instance-action", "spot", notice, clock.deadline_epoch, steps)
ctx = StepContext(clock=clock, instance_id="i-restart", dry_run=False)
Runner(plan, ctx, StoreJournal(store, "instance-action")).run()
"""


def step_statuses(state_dir: Path) -> Dict[str, str]:
    with open(state_dir / "state.json", encoding="utf-8") as handle:
        data = json.load(handle)
    steps: List[Dict[str, str]] = data["responses"]["instance-action"]["steps"]
    return {s["name"]: s["status"] for s in steps}


def test_restart_during_a_long_hook_reruns_it_but_not_the_finished_one(
    tmp_path: Path, records: Records
) -> None:
    """A daemon process runs hook A (done) then hook B (long) and is killed with SIGKILL
    while B runs. A second runner on a StateStore loaded from the same directory marks B
    interrupted, runs B again and does not run A again (counter files say so)."""
    state_dir = tmp_path / "state"
    a_count, b_count, b_pgid = tmp_path / "a", tmp_path / "b", tmp_path / "b.pgid"
    hooks: List[Dict[str, Any]] = [
        {"name": "a", "command": f"echo run >> {a_count}", "order": 0},
        {
            "name": "b",
            # The first run hangs (until killed); a re-run finishes at once.
            "command": f"echo run >> {b_count}; [ $(wc -l < {b_count}) -ge 2 ] "
            f"|| {{ echo $$ > {b_pgid}; sleep 300; }}",
            "order": 1,
        },
    ]
    notice = notice_in(120)
    args = {"notice": notice.to_json(), "hooks": hooks, "state_dir": str(state_dir)}
    daemon = subprocess.Popen([sys.executable, "-c", FIRST_DAEMON, str(REPO), json.dumps(args)])
    try:
        pgid = int(wait_for_file(str(b_pgid), timeout=15))
        assert step_statuses(state_dir) == {"hook:a": OK, "hook:b": RUNNING}
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(10)
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
    # B's process group outlives a SIGKILLed daemon (it is its own session); under systemd
    # the unit's cgroup is cleaned up on restart. Do the same here before the restart.
    assert live_group_members(pgid), "hook B should still be running"
    os.killpg(pgid, signal.SIGKILL)

    config = Config(deadline_margin=10.0, hooks=tuple(HookSpec(**h) for h in hooks))
    fresh = Notice.from_json(notice.to_json())
    store = StateStore(str(state_dir), boot_id="test-boot")
    store.load("i-restart")
    clock = NoticeClock(fresh, config.deadline_margin)
    plan = build_plan(fresh, config)
    store.continue_response(
        "instance-action", [(s.name, s.kind) for s in plan.all_steps()], clock.deadline_epoch
    )
    assert step_statuses(state_dir) == {"hook:a": OK, "hook:b": INTERRUPTED}
    ctx = StepContext(clock=clock, instance_id="i-restart", dry_run=False)
    outcomes = Runner(plan, ctx, StoreJournal(store, "instance-action")).run()

    assert a_count.read_text() == "run\n"
    assert b_count.read_text() == "run\nrun\n"
    assert outcomes["hook:a"] == StepOutcome(OK, "finished before a restart")
    assert outcomes["hook:b"].status == OK
    assert step_statuses(state_dir) == {"hook:a": OK, "hook:b": OK}
    response = store.response("instance-action")
    assert response is not None and response["done"] is True


def test_runner_start_runs_in_the_background() -> None:
    """Runner.start() returns at once; `done` is set when the plan has run."""
    ctx = context(30)
    runner = Runner(Plan(ctx.notice, stages=[(Sleeper("s", 0.3),)]), ctx, ListJournal())
    begun = time.monotonic()
    thread = runner.start()
    assert time.monotonic() - begun < 0.1 and not runner.done.is_set()
    assert runner.done.wait(5)
    thread.join(1)
    assert not thread.is_alive()
    assert runner.outcomes["s"].status == OK
