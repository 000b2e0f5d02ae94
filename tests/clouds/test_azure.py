"""Azure (CONTRACT §10): the real daemon against a real HTTP stand-in for the Instance
Metadata Service that keeps its Scheduled Events rules (`Metadata: true`, api-version, the
document's shape and DocumentIncarnation, EventStatus, StartRequests)."""

from __future__ import annotations

import signal
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Dict, List

import pytest
from clouds_support import config_for, env_hook, last_poll, runs, state_of
from testkit import DaemonProcess, wait_for

from spotwatch.clouds.azure.simulator import AzureMetadataSimulator

Start = Callable[..., DaemonProcess]
SOURCE = "azure-scheduled-event"


def ahead(seconds: float) -> datetime:
    return (datetime.now(timezone.utc) + timedelta(seconds=seconds)).replace(microsecond=0)


def unacknowledging(workdir: Path, azure: AzureMetadataSimulator, hook: Dict[str, Any]) -> Path:
    """A config with one hook and `azure.acknowledge: false`."""
    return config_for(workdir, "azure", azure.endpoint, azure={"acknowledge": False}, hooks=[hook])


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize(
    ("event_type", "action"),
    [
        ("Preempt", "terminate"),
        ("Terminate", "terminate"),
        ("Redeploy", "stop"),
        ("Reboot", "reboot"),
        ("Freeze", "maintenance"),
    ],
)
def test_each_event_type_is_its_notice(
    azure: AzureMetadataSimulator, workdir: Path, daemons: Start, event_type: str, action: str
) -> None:
    """§10's Azure rows: an event for this VM is a notice of the action its EventType means,
    timed at its NotBefore; hooks get SPOTWATCH_EVENT_ID (EventId), SPOTWATCH_EVENT_CODE
    (EventType), SPOTWATCH_CLOUD=azure and the VM's id (compute/vmId). Every request carried
    `Metadata: true` and an api-version (the stand-in answers 400 otherwise)."""
    out = workdir / "env.jsonl"
    daemon = daemons(unacknowledging(workdir, azure, env_hook("h", out, [action])))
    not_before = ahead(120)
    event_id = azure.add_event(event_type, not_before)
    (seen,) = wait_for(lambda: runs(out))
    assert seen["SPOTWATCH_ACTION"] == action
    assert seen["SPOTWATCH_SOURCE"] == SOURCE
    assert seen["SPOTWATCH_NOTICE_TIME"] == iso(not_before)
    assert seen["SPOTWATCH_EVENT_ID"] == event_id
    assert seen["SPOTWATCH_EVENT_CODE"] == event_type
    assert seen["SPOTWATCH_CLOUD"] == "azure"
    assert seen["SPOTWATCH_INSTANCE_ID"] == azure.instance_id
    assert azure.count(status=400) == 0
    assert daemon.stop() == 0


def test_events_for_another_vm_are_ignored(
    azure: AzureMetadataSimulator, workdir: Path, daemons: Start
) -> None:
    """A placement group shares one list: an event whose Resources name other VMs starts
    nothing here; one naming this VM among others does (names compared as Azure does,
    ignoring case)."""
    out = workdir / "env.jsonl"
    daemons(config_for(workdir, "azure", azure.endpoint, hooks=[env_hook("h", out, ["reboot"])]))
    azure.add_event("Reboot", ahead(120), resources=["other-vm-7", "other-vm-8"])
    wait_for(lambda: azure.count(path="/metadata/scheduledevents") >= 4)
    assert runs(out) == []
    mine = azure.add_event("Reboot", ahead(120), resources=["other-vm-7", "SPOT-VM-1"])
    (seen,) = wait_for(lambda: runs(out))
    assert seen["SPOTWATCH_EVENT_ID"] == mine


def test_a_slow_first_answer_does_not_hold_the_start(workdir: Path, daemons: Start) -> None:
    """Scheduled Events turns on at the first request, whose answer may take minutes (8 s
    here). The daemon starts meanwhile: it polls and says it is waiting (poll `degraded`),
    and once the answer came, an event listed is handled."""
    out = workdir / "env.jsonl"
    with AzureMetadataSimulator(first_answer_delay=8.0) as azure:
        config = config_for(
            workdir, "azure", azure.endpoint, hooks=[env_hook("h", out, ["terminate"])]
        )
        daemon = daemons(config)
        wait_for(lambda: last_poll(workdir).get("result") == "degraded", timeout=6)
        assert "waiting for Scheduled Events' first answer" in daemon.log()
        azure.add_event("Preempt", ahead(60))
        wait_for(lambda: runs(out), timeout=20)
        wait_for(lambda: last_poll(workdir).get("result") in ("ok", "notice"))


def test_an_event_that_leaves_the_list_before_notbefore_is_canceled(
    azure: AzureMetadataSimulator, workdir: Path, daemons: Start
) -> None:
    """§7 Cancel on Azure: an event's response has started (a long hook runs) and the event
    leaves the list before its NotBefore: the response starts nothing more, and the cancel
    hooks run once with the event's action, id and type."""
    out = workdir / "env.jsonl"
    cancels = workdir / "cancel.jsonl"
    hooks = [
        env_hook("long", out, ["reboot"], sleep=3),
        env_hook("after", out, ["reboot"], order=1),
        env_hook("undo", cancels, ["cancel"]),
    ]
    daemons(config_for(workdir, "azure", azure.endpoint, hooks=hooks))
    event_id = azure.add_event("Reboot", ahead(600))
    wait_for(lambda: runs(out))
    azure.remove_event(event_id)
    (cancel,) = wait_for(lambda: runs(cancels), timeout=10)
    assert cancel["SPOTWATCH_ACTION"] == "cancel"
    assert cancel["SPOTWATCH_CANCELED_ACTION"] == "reboot"
    assert cancel["SPOTWATCH_EVENT_ID"] == event_id
    assert cancel["SPOTWATCH_EVENT_CODE"] == "Reboot"
    assert cancel["SPOTWATCH_SOURCE"] == SOURCE
    time.sleep(3.5)  # the long hook has ended: the next stage does not start
    assert [r["SPOTWATCH_ACTION"] for r in runs(out)] == ["reboot"]
    assert azure.start_requests == []  # a canceled response lets nothing go ahead


def test_acknowledgement_after_the_response_lets_the_event_go_ahead(
    workdir: Path, daemons: Start
) -> None:
    """With `azure.acknowledge` (the default), once the response has ended a POST of
    {"StartRequests": [{"EventId": ID}]} follows: the event starts (EventStatus Started),
    completes and leaves the list before its NotBefore, and that is no cancel."""
    out = workdir / "env.jsonl"
    with AzureMetadataSimulator(complete_after=0.5) as azure:
        hooks = [env_hook("h", out, ["stop"]), env_hook("undo", out, ["cancel"])]
        daemons(config_for(workdir, "azure", azure.endpoint, hooks=hooks))
        event_id = azure.add_event("Redeploy", ahead(600))
        wait_for(lambda: azure.start_requests == [event_id], timeout=10)
        wait_for(lambda: all(e["EventId"] != event_id for e in azure.events()))
        time.sleep(1.5)  # more than 3 polls without it
        assert [r["SPOTWATCH_ACTION"] for r in runs(out)] == ["stop"]
        record = next(iter(state_of(workdir)["responses"].values()))
        assert {s["name"]: s["status"] for s in record["steps"]}["azure:start-requests"] == "ok"


def test_without_acknowledgement_nothing_is_posted(
    azure: AzureMetadataSimulator, workdir: Path, daemons: Start
) -> None:
    """`azure.acknowledge: false`: the response runs and ends, and no StartRequests is sent:
    the event waits for its NotBefore."""
    out = workdir / "env.jsonl"
    daemons(unacknowledging(workdir, azure, env_hook("h", out, ["terminate"])))
    azure.add_event("Preempt", ahead(60))
    wait_for(lambda: runs(out))
    wait_for(lambda: all(r.get("done") for r in state_of(workdir).get("responses", {}).values()))
    time.sleep(0.5)
    assert azure.start_requests == []
    assert azure.count(method="POST") == 0


def test_a_restart_during_a_response_finishes_it_and_then_acknowledges(
    azure: AzureMetadataSimulator, workdir: Path, daemons: Start
) -> None:
    """The daemon is killed while the second hook of a Preempt's response runs. Started
    again (the event still listed), it does not run the first hook again, runs the second,
    and only then sends StartRequests, once."""
    out = workdir / "env.jsonl"
    hooks = [
        env_hook("first", out, ["terminate"]),
        env_hook("second", out, ["terminate"], order=1, sleep=8),
    ]
    config = config_for(workdir, "azure", azure.endpoint, hooks=hooks)
    first = daemons(config)
    event_id = azure.add_event("Preempt", ahead(300))
    wait_for(lambda: len(runs(out)) == 2)
    first.stop(signal.SIGKILL)
    assert azure.start_requests == []
    daemons(config)
    wait_for(lambda: len(runs(out)) == 3, timeout=15)
    names: List[str] = [r["SPOTWATCH_EVENT_ID"] for r in runs(out)]
    assert names == [event_id] * 3
    wait_for(lambda: azure.start_requests == [event_id], timeout=20)
