"""The clouds' model itself, on traces written by hand (no daemon): each test is one rule of
CONTRACT.md §10 (docs/gcp.md, docs/azure.md) as the model reads it, so that its findings
against the real daemon mean something."""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from typing import Iterable, List, Optional, Sequence, Tuple

from clouds_driver import CloudTrace
from clouds_invariants import check
from clouds_model import interpret
from clouds_signals import CloudSettings
from model_trace import Answer, AwsCall, HookRun, Lifetime, Shown, WorldEvent

T0 = 1_800_000_000.0
POLL = 0.25
VM = "4520031799277581759"
GCP = CloudSettings(cloud="gcp", lb="off", ecs=False, back_hook=True, gcp_notice=30.0)
AZURE = replace(GCP, cloud="azure")


def iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def polls(start: float, end: float, signal: str, *shown: Shown) -> List[Answer]:
    count = round((end - start) / POLL)
    return [Answer(T0 + start + i * POLL, signal, tuple(shown)) for i in range(count)]


def event(kind: str, ahead: float, number: int = 1) -> Shown:
    return Shown(kind, iso(T0 + ahead), T0 + ahead, f"EV-{number:04d}", "active")


def hook(
    name: str, at: float, action: str, source: str, notice: float, margin: float = 2.0, **extra: str
) -> HookRun:
    env = {
        "SPOTWATCH_ACTION": action,
        "SPOTWATCH_SOURCE": source,
        "SPOTWATCH_CLOUD": extra.pop("cloud", "gcp"),
        "SPOTWATCH_INSTANCE_ID": VM,
        "SPOTWATCH_DRY_RUN": "0",
        "SPOTWATCH_DEADLINE": str(int(T0 + notice - margin)),
        "SPOTWATCH_SECONDS_LEFT": str(int(notice - margin - at)),
        "SPOTWATCH_NOTICE_TIME": iso(T0 + notice),
        **extra,
    }
    return HookRun(name, T0 + at, T0 + at + 0.3, env)


def trace_of(
    answers: Iterable[Answer],
    *,
    settings: CloudSettings = GCP,
    hooks: Sequence[HookRun] = (),
    approvals: Sequence[Tuple[float, str]] = (),
    calls: Sequence[AwsCall] = (),
    lifetimes: Optional[List[Lifetime]] = None,
) -> CloudTrace:
    trace = CloudTrace(settings=asdict(settings), instance_id=VM, cloud=settings.cloud)
    trace.events = [WorldEvent(T0, "begin")]
    trace.lifetimes = lifetimes or [Lifetime(T0 - 2, 0)]
    trace.answers = sorted(answers, key=lambda a: a.t)
    trace.hooks, trace.calls, trace.ended = list(hooks), list(calls), T0 + 60
    trace.approvals = [(T0 + t, e) for t, e in approvals]
    return trace


def invariants(trace: CloudTrace, settings: CloudSettings = GCP) -> List[str]:
    return sorted({v.invariant for v in check(trace, settings)[1]})


def preempted(value: str = "TRUE") -> Shown:
    return Shown(value)


def test_preemption_is_a_terminate_timed_first_seen_plus_gcp_notice() -> None:
    """§10: `preempted` TRUE is a `terminate` from `gcp-preempted`, its time first seen +
    `gcp.notice` (to the second); both terminate hooks run, by order, told that deadline."""
    answers = polls(0, 8, "preempted", preempted())
    runs = [
        hook("checkpoint", 0.5, "terminate", "gcp-preempted", 30),
        hook("flush", 1.0, "terminate", "gcp-preempted", 30),
    ]
    assert invariants(trace_of(answers, hooks=runs)) == []
    late = [replace(r, env={**r.env, "SPOTWATCH_DEADLINE": str(int(T0 + 40))}) for r in runs]
    assert "hook-environment" in invariants(trace_of(answers, hooks=late))
    assert "seen-twice-gets-hooks" in invariants(trace_of(answers))


def test_a_google_notice_keeps_its_time_while_the_value_stays() -> None:
    """docs/gcp.md: the time is kept while the value stays: re-reads do not move it."""
    answers = polls(0, 3, "maintenance-event", Shown("MIGRATE_ON_HOST_MAINTENANCE"))
    answers += polls(3, 6, "maintenance-event", Shown("MIGRATE_ON_HOST_MAINTENANCE"))
    model = interpret(trace_of(answers), GCP)
    (response,) = model.responses
    assert response.action == "maintenance" and response.source == "gcp-maintenance-event"
    assert {epoch for _, epoch, _ in response.shown} == {T0 + 60}


def test_a_google_value_back_after_a_quiet_answer_is_timed_afresh() -> None:
    """docs/gcp.md: the time is kept only while the value stays; back after NONE (one poll,
    too few to forget it, §3) it is the same notice, its time reckoned again (moved)."""
    answers = polls(0, 2, "maintenance-event", Shown("MIGRATE_ON_HOST_MAINTENANCE"))
    answers += polls(2, 2.25, "maintenance-event", Shown("NONE"))
    answers += polls(4, 6, "maintenance-event", Shown("MIGRATE_ON_HOST_MAINTENANCE"))
    (response,) = interpret(trace_of(answers), GCP).responses
    assert response.shown[-1][1] == T0 + 4 + 60


def test_terminate_on_host_maintenance_is_a_stop_owing_a_start_on_the_next_boot() -> None:
    """§10: TERMINATE_ON_HOST_MAINTENANCE is a `stop`; the next boot owes the `start`."""
    answers = polls(0, 4, "maintenance-event", Shown("TERMINATE_ON_HOST_MAINTENANCE"))
    answers += polls(6, 9, "maintenance-event", Shown("NONE"))
    lives = [Lifetime(T0 - 2, 0, T0 + 4.5, "sigterm", 0, T0 + 4.2), Lifetime(T0 + 5, 1)]
    actions = [r.action for r in interpret(trace_of(answers, lifetimes=lives), GCP).responses]
    assert actions == ["stop", "start"]


def test_an_azure_event_removed_before_not_before_is_canceled() -> None:
    """§10, §7 Cancel: an event whose response started and that leaves the list before its
    NotBefore is canceled: the `cancel` hooks run, told the canceled action."""
    answers = polls(0, 3, "azure", event("Redeploy", 8))
    answers += polls(3, 6, "azure")
    runs = [
        hook("checkpoint", 2.1, "stop", "azure-scheduled-event", 8, cloud="azure",
             SPOTWATCH_EVENT_ID="EV-0001", SPOTWATCH_EVENT_CODE="Redeploy"),
        hook("flush", 2.5, "stop", "azure-scheduled-event", 8, cloud="azure",
             SPOTWATCH_EVENT_ID="EV-0001", SPOTWATCH_EVENT_CODE="Redeploy"),
    ]  # fmt: skip
    settings = replace(AZURE, acknowledge=False)
    trace = trace_of(answers, settings=settings, hooks=runs)
    model = interpret(trace, settings)
    assert [r.action for r in model.responses] == ["stop", "cancel"]
    assert model.responses[1].canceled_action == "stop"
    back = hook("back", 4.0, "cancel", "azure-scheduled-event", 8, cloud="azure",
                SPOTWATCH_EVENT_ID="EV-0001", SPOTWATCH_EVENT_CODE="Redeploy",
                SPOTWATCH_CANCELED_ACTION="stop")  # fmt: skip
    back = replace(back, env={**back.env, "SPOTWATCH_DEADLINE": str(int(T0 + 9)),
                              "SPOTWATCH_SECONDS_LEFT": "5"})  # fmt: skip  # start + timeout
    assert invariants(trace_of(answers, settings=settings, hooks=[*runs, back]), settings) == []
    stays = polls(0, 6, "azure", event("Redeploy", 8))
    unowed = trace_of(stays, settings=settings, hooks=[*runs, back])
    assert "no-unowed-hook" in invariants(unowed, settings)  # not canceled: no cancel hooks


def test_an_azure_event_removed_before_its_response_is_owed_nothing() -> None:
    """docs/azure.md: the response waits for NotBefore - lead; gone before, nothing runs."""
    answers = polls(0, 2, "azure", event("Reboot", 14)) + polls(2, 5, "azure")
    assert invariants(trace_of(answers, settings=AZURE), AZURE) == []


def test_startrequests_follow_the_response_and_never_cut_it() -> None:
    """§10: with `azure.acknowledge`, StartRequests follows the response's end: missing, or
    sent while a hook of the end still ran, or in a dry run, it breaks the contract."""
    answers = polls(0, 6, "azure", event("Freeze", 20))  # its response starts at 14
    answers += polls(14, 20, "azure", event("Freeze", 20))
    run = hook("maint", 14.5, "maintenance", "azure-scheduled-event", 20, cloud="azure",
               SPOTWATCH_EVENT_ID="EV-0001", SPOTWATCH_EVENT_CODE="Freeze")  # fmt: skip
    settings = replace(AZURE, lead=6.0)
    ok = trace_of(answers, settings=settings, hooks=[run], approvals=[(15.2, "EV-0001")])
    assert invariants(ok, settings) == []
    early = trace_of(answers, settings=settings, hooks=[run], approvals=[(14.6, "EV-0001")])
    assert "ack-after-response" in invariants(early, settings)
    assert "ack-follows-response" in invariants(
        trace_of(answers, settings=settings, hooks=[run]), settings
    )
    dry = replace(settings, dry_run=True)
    dry_run = replace(run, env={**run.env, "SPOTWATCH_DRY_RUN": "1"})
    told = trace_of(answers, settings=dry, hooks=[dry_run], approvals=[(15.2, "EV-0001")])
    assert "ack-only-when-asked" in invariants(told, dry)


def test_nothing_may_ask_aws_on_another_cloud() -> None:
    """§10: what only AWS has is off: any request to the AWS API or IMDS is a finding."""
    call = AwsCall(T0 + 1, "forbidden", "PUT /latest/api/token", {})
    assert invariants(trace_of([], calls=[call])) == ["nothing-asks-aws"]


def test_every_hook_is_told_its_cloud() -> None:
    """§10: SPOTWATCH_CLOUD is the cloud the hook runs on."""
    answers = polls(0, 8, "preempted", preempted())
    runs = [
        hook("checkpoint", 0.5, "terminate", "gcp-preempted", 30, cloud="aws"),
        hook("flush", 1.0, "terminate", "gcp-preempted", 30),
    ]
    assert invariants(trace_of(answers, hooks=runs)) == ["hook-cloud"]


def test_a_waiting_event_starts_at_its_moment_through_a_metadata_outage() -> None:
    """§3, §7: the daemon keeps the NotBefore it was told; its response starts at NotBefore
    - lead even while the metadata service fails (no answer came then)."""
    answers = polls(0, 1, "azure", event("Reboot", 8)) + polls(4, 8, "azure", event("Reboot", 8))
    run = hook("checkpoint", 2.2, "reboot", "azure-scheduled-event", 8, cloud="azure",
               SPOTWATCH_EVENT_ID="EV-0001", SPOTWATCH_EVENT_CODE="Reboot")  # fmt: skip
    settings = replace(AZURE, acknowledge=False)
    (response,) = interpret(trace_of(answers, settings=settings), settings).responses
    assert response.started == T0 + 2
    assert invariants(trace_of(answers, settings=settings, hooks=[run]), settings) == []


def test_an_event_let_go_ahead_that_leaves_the_list_went_ahead() -> None:
    """docs/azure.md: after spotwatch's StartRequests, an event leaving the list (seen
    Started or not: a poll may miss it) went ahead, not canceled: no cancel response."""
    answers = polls(0, 3, "azure", event("Freeze", 8)) + polls(3, 6, "azure")
    settings = replace(AZURE, acknowledge=True)
    approved = trace_of(answers, settings=settings, approvals=[(2.8, "EV-0001")])
    assert [r.action for r in interpret(approved, settings).responses] == ["maintenance"]
    canceled = trace_of(answers, settings=settings)
    actions = [r.action for r in interpret(canceled, settings).responses]
    assert actions == ["maintenance", "cancel"]


def test_sigterm_exits_0_once_the_daemon_had_polled() -> None:
    """§1, §4, §6: SIGTERM to a daemon that had polled (READY) ends it with status 0; one
    stopped before its first poll (a Google watch may have read already) owes nothing."""
    life = Lifetime(T0 - 2, 0, T0 + 1, "sigterm", -15, T0 + 0.9)
    trace = trace_of([], lifetimes=[life])
    assert invariants(trace) == []
    trace.ready = {0: True}
    assert invariants(trace) == ["sigterm-exits-0"]
