"""The model itself, on traces written by hand (no daemon, no I/O): it must say what the
contract says, so that its findings against the real daemon mean something. Each test is
one rule of CONTRACT.md §3 or §7 as the model reads it."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any, Iterable, List, Optional, Sequence

from contract_aws import check
from contract_model import interpret
from contract_signals import Settings
from model_trace import (
    Announcement,
    Answer,
    AwsCall,
    HookRun,
    Lifetime,
    LockSpan,
    Shown,
    Trace,
    WorldEvent,
)

T0 = 1_800_000_000.0
POLL = 0.25
INSTANCE = "i-0123456789abcdef0"


def iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def polls(start: float, end: float, signal: str, *shown: Shown) -> List[Answer]:
    count = round((end - start) / POLL)
    return [Answer(T0 + start + i * POLL, signal, tuple(shown)) for i in range(count)]


def spot(action: str, ahead: float) -> Shown:
    return Shown(action, iso(T0 + ahead), T0 + ahead)


def event(code: str, ahead: float, state: str = "active", number: int = 1) -> Shown:
    return Shown(code, iso(T0 + ahead), T0 + ahead, f"instance-event-{number}", state)


def hook(name: str, at: float, action: str, source: str, told: float, **extra: str) -> HookRun:
    env = {
        "SPOTWATCH_ACTION": action,
        "SPOTWATCH_SOURCE": source,
        "SPOTWATCH_INSTANCE_ID": INSTANCE,
        "SPOTWATCH_DRY_RUN": "0",
        "SPOTWATCH_DEADLINE": str(int(T0 + told)),
        "SPOTWATCH_SECONDS_LEFT": str(int(told - at)),
        "SPOTWATCH_NOTICE_TIME": iso(T0 + told + 2.0),
        **extra,
    }
    return HookRun(name, T0 + at, T0 + at + 0.3, env)


def trace_of(
    answers: Iterable[Answer],
    *,
    hooks: Sequence[HookRun] = (),
    calls: Sequence[AwsCall] = (),
    lifetimes: Optional[List[Lifetime]] = None,
    settings: Optional[Settings] = None,
) -> Trace:
    settings = settings or Settings()
    trace = Trace(settings=asdict(settings), instance_id=INSTANCE)
    trace.events = [WorldEvent(T0, "begin")]
    trace.lifetimes = lifetimes or [Lifetime(T0 - 2, 0)]
    trace.answers = sorted(answers, key=lambda a: a.t)
    trace.hooks, trace.calls, trace.ended = list(hooks), list(calls), T0 + 60
    return trace


def invariants(trace: Trace, settings: Optional[Settings] = None) -> List[str]:
    return sorted({v.invariant for v in check(trace, settings or Settings())[1]})


def test_a_notice_seen_for_two_polls_is_owed_its_hooks() -> None:
    """§3, §4: every end seen for 2 polls gets its hooks (here: none ran)."""
    trace = trace_of(polls(0, 6, "spot", spot("terminate", 30)))
    assert "seen-twice-gets-hooks" in invariants(trace)


def test_a_notice_seen_once_is_owed_nothing() -> None:
    """One sighting promises nothing: the contract's threshold is two polls."""
    answers = polls(0, POLL, "spot", spot("terminate", 30)) + polls(POLL, 6, "spot")
    assert "seen-twice-gets-hooks" not in invariants(trace_of(answers))


def test_a_notice_absent_for_three_polls_comes_back_as_a_new_one() -> None:
    """§3: absent twice, it is the same notice; absent three times, the next is new."""
    shown = spot("stop", 30)
    answers = polls(0, 1, "spot", shown) + polls(1, 1.5, "spot") + polls(1.5, 2, "spot", shown)
    assert len(interpret(trace_of(answers), Settings()).ends) == 1
    answers += polls(2, 2.75, "spot") + polls(2.75, 3.5, "spot", shown)
    assert len(interpret(trace_of(answers), Settings()).ends) == 2


def test_the_second_signal_of_an_end_joins_the_first_and_runs_no_hook() -> None:
    """§7 One end: the group's `Terminated` joins the Spot terminate; its hooks run once."""
    answers = polls(0, 8, "spot", spot("terminate", 30)) + polls(
        1, 8, "autoscaling", Shown("Terminated")
    )
    runs = [hook("checkpoint", 0.5, "terminate", "instance-action", 15.0)]
    model = interpret(trace_of(answers, hooks=runs), Settings())
    (end,) = model.ends
    assert [m.signal.name for m in end.members] == ["spot", "autoscaling"]
    again = [*runs, hook("checkpoint", 2.0, "terminate", "target-lifecycle-state", 15.0)]
    assert "once-per-end" in invariants(trace_of(answers, hooks=again))


def test_a_canceled_response_ended_nothing() -> None:
    """§7: a Spot stop after a canceled scheduled stop is a whole response of its own."""
    answers = polls(0, 3, "scheduled", event("instance-stop", 5))
    answers += polls(3, 9, "scheduled", event("instance-stop", 5, "canceled"))
    answers += polls(5, 9, "spot", spot("stop", 30))
    model = interpret(trace_of(answers), Settings())
    assert [e.root.signal.name for e in model.ends] == ["scheduled", "spot"]
    assert [r.action for r in model.responses] == ["stop", "cancel", "stop"]
    assert "canceled-absorbs-nothing" in invariants(trace_of(answers))  # no hook ran for it


def test_a_cancel_hands_the_end_to_the_notice_that_joined_it() -> None:
    """§7: the cancel comes while a Spot stop has joined: that one runs what is left."""
    answers = polls(0, 9, "scheduled", event("instance-stop", 5))[:12]
    answers += polls(3, 9, "scheduled", event("instance-stop", 5, "canceled"))
    answers += polls(1, 9, "spot", spot("stop", 30))
    (end,) = interpret(trace_of(answers), Settings()).ends
    assert end.root.signal.name == "spot" and end.transferred == T0 + 3


def test_a_kill_while_a_hook_ran_allows_it_once_more() -> None:
    """§3: a restart re-runs no finished step; one cut by kill -9 may run again."""
    answers = polls(0, 2, "spot", spot("stop", 30)) + polls(2.5, 8, "spot", spot("stop", 30))
    lives = [Lifetime(T0 - 2, 0, T0 + 1.0, "kill", -9), Lifetime(T0 + 1.2, 0)]
    first = hook("checkpoint", 0.8, "stop", "instance-action", 28.0)
    runs = [HookRun("checkpoint", first.started, T0 + 1.1, first.env)]
    runs.append(hook("checkpoint", 2.6, "stop", "instance-action", 28.0))
    assert "once-per-end" not in invariants(trace_of(answers, hooks=runs, lifetimes=lives))


def test_dry_run_makes_no_mutation() -> None:
    """§1, §7: in dry run no mutating AWS call is made."""
    settings = Settings(dry_run=True)
    call = AwsCall(T0 + 1, "ecs", "UpdateContainerInstancesState", {"status": "DRAINING"})
    trace = trace_of(polls(0, 2, "spot", spot("terminate", 30)), calls=[call], settings=settings)
    assert "no-mutation-in-dry-run" in invariants(trace, settings)


def test_the_first_boot_after_a_stop_owes_a_start_that_puts_ecs_back() -> None:
    """§7 Start after a stop: ACTIVE again where spotwatch drained before the stop."""
    answers = polls(0, 3, "spot", spot("stop", 30)) + polls(6, 9, "spot")
    lives = [Lifetime(T0 - 2, 0, T0 + 4, "sigterm", 0), Lifetime(T0 + 5, 1)]
    drained = AwsCall(T0 + 0.2, "ecs", "UpdateContainerInstancesState", {"status": "DRAINING"})
    trace = trace_of(answers, calls=[drained], lifetimes=lives)
    starts = interpret(trace, Settings()).of("start")
    assert len(starts) == 1 and starts[0].notice.text == iso(T0 + 30)
    assert "put-back-after-cancel-or-start" in invariants(trace)


def test_hooks_are_told_the_earliest_deadline_of_their_end() -> None:
    """§7: the earlier deadline governs the steps still to come (here the group's budget)."""
    settings = Settings()
    answers = polls(0, 8, "spot", spot("terminate", 30))
    answers += polls(0.5, 8, "autoscaling", Shown("Terminated"))
    group_deadline = int(T0 + 0.5) - T0 + settings.asg_budget - settings.margin
    right = hook(
        "flush",
        3.0,
        "terminate",
        "instance-action",
        group_deadline,
        SPOTWATCH_NOTICE_TIME=iso(T0 + 30),
    )
    wrong = hook(
        "flush", 3.0, "terminate", "instance-action", 28.0, SPOTWATCH_NOTICE_TIME=iso(T0 + 30)
    )
    assert "hook-environment" not in invariants(trace_of(answers, hooks=[right]))
    assert "hook-environment" in invariants(trace_of(answers, hooks=[wrong]))


# ---------------------------------------------------------------------- §8 and §9


def shutdown_trace(
    *, announced: float = 0.5, released: Optional[float] = 2.5, **kwargs: Any
) -> Trace:
    """A daemon polling with no notice for 10 s, holding logind's lock from its start, and a
    shutdown announced at `announced` (the lock released at `released`)."""
    answers = kwargs.pop("answers", polls(0, 10, "spot"))
    trace = trace_of(answers, **kwargs)
    trace.logind = True
    trace.locks = [LockSpan(T0 - 1.5, None if released is None else T0 + released)]
    trace.announcements = [Announcement(T0 + announced, True)]
    return trace


def on_shutdown(name: str, at: float, **extra: str) -> HookRun:
    """A hook run for the shutdown announced at +0.5 s (notice time +0.5 + budget, to the
    second; deadline that - margin)."""
    return hook(name, at, "shutdown", "shutdown", 12.0, **extra)


def test_a_shutdown_no_notice_announced_gets_a_response_of_its_own() -> None:
    """§8: no end response on this boot: a `shutdown` response, its hooks owed like any."""
    model = interpret(shutdown_trace(), Settings())
    (response,) = model.of("shutdown")
    assert response.source == "shutdown" and response.notice.epoch == T0 + 14
    assert "seen-twice-gets-hooks" in invariants(shutdown_trace())
    runs = [on_shutdown("checkpoint", 0.7), on_shutdown("flush", 1.1)]
    quiet = Settings(ecs=False, lb="off")  # no drain or deregistration owed either
    assert invariants(shutdown_trace(hooks=runs, settings=quiet), quiet) == []


def test_a_shutdown_during_an_end_response_waits_for_it_and_runs_nothing() -> None:
    """§8: a terminate response runs: the shutdown waits for it; no `shutdown` hook runs."""
    answers = polls(-3, 10, "spot", spot("terminate", 30))
    runs = [hook("checkpoint", -2.5, "terminate", "instance-action", 28.0)]
    runs.append(hook("flush", -2.0, "terminate", "instance-action", 28.0))
    model = interpret(shutdown_trace(answers=answers, hooks=runs), Settings())
    assert model.of("shutdown") == [] and model.shutdowns[0].waits_for is not None
    again = [*runs, on_shutdown("checkpoint", 0.7)]
    assert "no-unowed-hook" in invariants(shutdown_trace(answers=answers, hooks=again))


def test_the_lock_is_held_while_the_daemon_polls() -> None:
    """§8: the delay lock is held from the start, whenever no shutdown is under way."""
    runs = [on_shutdown("checkpoint", 0.7), on_shutdown("flush", 1.1)]
    trace = shutdown_trace(hooks=runs)
    trace.locks = [LockSpan(T0 - 1.5, T0 - 0.5), *trace.locks[1:]]
    assert "lock-held" in invariants(trace)


def test_the_lock_goes_once_the_response_ended_and_not_before() -> None:
    """§8: released the moment the response ends: not while its hook runs, not long after."""
    runs = [on_shutdown("checkpoint", 0.7), on_shutdown("flush", 1.1)]  # ends at +1.4
    assert "shutdown-release" in invariants(shutdown_trace(hooks=runs, released=1.2))
    assert "shutdown-release" in invariants(shutdown_trace(hooks=runs, released=6.0))
    assert "shutdown-release" not in invariants(shutdown_trace(hooks=runs, released=1.6))


def test_a_shutdown_called_off_ended_nothing_and_starts_nothing_more() -> None:
    """§8: called off, the response starts no further step and (like a canceled one) owes
    no start on the next boot; a shutdown that went on does (counted like a stop)."""
    runs = [on_shutdown("checkpoint", 0.7), on_shutdown("flush", 3.0)]
    lives = [Lifetime(T0 - 2, 0, T0 + 5, "sigterm", 0), Lifetime(T0 + 6, 1)]
    trace = shutdown_trace(hooks=runs, released=None, lifetimes=lives)
    trace.announcements.append(Announcement(T0 + 1.0, False))
    assert "called-off-starts-nothing" in invariants(trace)
    assert interpret(trace, Settings()).of("start") == []
    went_on = shutdown_trace(hooks=runs[:1], lifetimes=lives)
    assert len(interpret(went_on, Settings()).of("start")) == 1


def test_a_shutdown_response_never_ends_the_instance() -> None:
    """§8: never an instance action, whatever instance.after_response says."""
    settings = Settings(after_response="terminate")
    call = AwsCall(T0 + 1.5, "ec2", "TerminateInstances", {"InstanceId.1": INSTANCE})
    trace = shutdown_trace(calls=[call], settings=settings)
    assert "shutdown-no-instance-action" in invariants(trace, settings)


def test_a_preset_gives_up_at_the_time_it_is_given() -> None:
    """§9: an http preset waits for its answer at most its timeout (capped by the time
    left); the next order's hooks then start."""
    settings = Settings(preset_order=0, preset_answer=4.0)
    answers = polls(0, 10, "spot", spot("terminate", 30))
    runs = [
        hook("checkpoint", 0.5, "terminate", "instance-action", 28.0),
        hook("notify", 0.5, "terminate", "instance-action", 28.0),
    ]
    late = [*runs, hook("flush", 5.0, "terminate", "instance-action", 28.0)]
    trace = trace_of(answers, hooks=late, settings=settings)
    assert "preset-gives-up-at-T" in invariants(trace, settings)
    on_time = [*runs, hook("flush", 2.6, "terminate", "instance-action", 28.0)]
    trace = trace_of(answers, hooks=on_time, settings=settings)
    assert "preset-gives-up-at-T" not in invariants(trace, settings)


def test_a_container_stopped_through_the_runtime_keeps_stoptasks_promise() -> None:
    """§4 stop_via runtime: a task's container is stopped within a response, after its
    hooks (or at the final stop's moment), and no StopTask is made for it."""
    settings = Settings(stop_via="runtime")
    answers = polls(0, 10, "spot", spot("terminate", 30))
    runs = [hook("checkpoint", 0.5, "terminate", "instance-action", 28.0)]
    container = {"task": "arn:task/1", "container": "c1", "exited": T0 + 2.1}

    def judged(*calls: AwsCall) -> List[str]:
        return invariants(trace_of(answers, hooks=runs, calls=calls, settings=settings), settings)

    assert "ecs-stop-after-hooks" in judged(AwsCall(T0 + 0.6, "docker", "StopContainer", container))
    assert invariants(trace_of(polls(0, 10, "spot"), settings=settings), settings) == []
    outside = trace_of(
        polls(0, 10, "spot"),
        calls=[AwsCall(T0 + 2, "docker", "StopContainer", container)],
        settings=settings,
    )
    assert "ecs-stop-in-a-response" in invariants(outside, settings)
    stop_task = AwsCall(T0 + 2, "ecs", "StopTask", {"reason": "spotwatch: terminate at x"})
    assert "ecs-stop-via-runtime" in judged(stop_task)
    assert "ecs-stop-after-hooks" not in judged(
        AwsCall(T0 + 2, "docker", "StopContainer", container)
    )


def test_the_next_boots_instance_action_is_not_the_shutdowns() -> None:
    """§8: the shutdown went on; a terminate notice on the next boot ends the instance by
    §4 step 5: that is no instance action of the shutdown's response."""
    settings = Settings(after_response="terminate", ecs=False, lb="off")
    lives = [Lifetime(T0 - 2, 0, T0 + 3, "sigterm", 0), Lifetime(T0 + 4, 1)]
    answers = polls(0, 3, "spot") + polls(4.5, 10, "spot", spot("terminate", 30))
    call = AwsCall(T0 + 6, "ec2", "TerminateInstances", {"InstanceId.1": INSTANCE})
    trace = shutdown_trace(answers=answers, calls=[call], lifetimes=lives, settings=settings)
    assert "shutdown-no-instance-action" not in invariants(trace, settings)


def test_a_hook_cut_by_sigterm_may_run_again_under_the_notice_that_joined() -> None:
    """§3, §7: the end's flush was cut by SIGTERM; after the restart it runs again, under
    the group's notice that had joined the Spot one: not a hook of the joiner's own."""
    answers = polls(0, 8, "spot", spot("terminate", 30))
    answers += polls(0.5, 8, "autoscaling", Shown("Terminated"))
    lives = [Lifetime(T0 - 2, 0, T0 + 2.0, "sigterm", 0), Lifetime(T0 + 2.5, 0)]
    first = hook("flush", 1.5, "terminate", "instance-action", 15.0)
    cut = HookRun("flush", first.started, T0 + 1.9, first.env, stopped=True)
    again = hook("flush", 3.0, "terminate", "target-lifecycle-state", 15.0)
    runs = [hook("checkpoint", 1.0, "terminate", "instance-action", 15.0), cut, again]
    assert "once-per-end" not in invariants(trace_of(answers, hooks=runs, lifetimes=lives))


def test_another_ends_cancel_puts_nothing_back_while_an_end_stands() -> None:
    """§7: a canceled scheduled stop's cancel puts ECS back only when the instance stays: a
    Spot terminate response standing beside it keeps it drained (`ecs.reactivate`)."""
    answers = polls(0, 3, "scheduled", event("instance-retirement", 5))
    answers += polls(3, 9, "scheduled", event("instance-retirement", 5, "canceled"))
    answers += polls(0.5, 9, "spot", spot("terminate", 30))
    drained = AwsCall(T0 + 0.7, "ecs", "UpdateContainerInstancesState", {"status": "DRAINING"})
    active = AwsCall(T0 + 3.5, "ecs", "UpdateContainerInstancesState", {"status": "ACTIVE"})
    trace = trace_of(answers, calls=[drained], settings=Settings(lb="off"))
    assert "put-back-after-cancel-or-start" not in invariants(trace, Settings(lb="off"))
    trace = trace_of(answers, calls=[drained, active], settings=Settings(lb="off"))
    assert "no-active-while-end-stands" in invariants(trace, Settings(lb="off"))
