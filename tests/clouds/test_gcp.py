"""Google Cloud (CONTRACT §10): the real daemon against a real HTTP stand-in for the metadata
server that keeps its rules (Metadata-Flavor both ways, ETags, hanging GETs, 503s)."""

from __future__ import annotations

import signal
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import pytest
from clouds_support import config_for, env_hook, last_poll, runs, state_of
from testkit import DaemonProcess, wait_for

from spotwatch.clouds.gcp.simulator import (
    MAINTENANCE_EVENT,
    PREEMPTED,
    PREFIX,
    GcpMetadataSimulator,
)
from spotwatch.simulator.imds import ImdsSimulator

Start = Callable[..., DaemonProcess]
MAINTENANCE = "gcp-maintenance-event"


def _epoch(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp()


@pytest.mark.parametrize(
    ("path", "value", "action", "source", "lead"),
    [
        (PREEMPTED, "TRUE", "terminate", "gcp-preempted", 45.0),
        (MAINTENANCE_EVENT, "TERMINATE_ON_HOST_MAINTENANCE", "stop", MAINTENANCE, 60.0),
        (MAINTENANCE_EVENT, "MIGRATE_ON_HOST_MAINTENANCE", "maintenance", MAINTENANCE, 60.0),
    ],
)
def test_each_google_signal_is_its_notice(
    gcp: GcpMetadataSimulator,
    workdir: Path,
    daemons: Start,
    path: str,
    value: str,
    action: str,
    source: str,
    lead: float,
) -> None:
    """§10's Google rows: `preempted` TRUE is a `terminate` notice timed first seen +
    `gcp.notice` (45 s here); `maintenance-event` TERMINATE_ON_HOST_MAINTENANCE a `stop` and
    MIGRATE_ON_HOST_MAINTENANCE a `maintenance`, first seen + 60 s. Hooks get the source,
    SPOTWATCH_CLOUD=gcp and the VM's id (instance/id). Every request carried
    Metadata-Flavor: Google (the stand-in refuses any that does not, with a 403)."""
    out = workdir / "env.jsonl"
    config = config_for(
        workdir, "gcp", gcp.endpoint, gcp={"notice": "45s"}, hooks=[env_hook("h", out, [action])]
    )
    daemon = daemons(config)
    wait_for(lambda: gcp.count(path=PREFIX + path) >= 1)
    before = time.time()
    gcp.set_value(path, value)
    (seen,) = wait_for(lambda: runs(out))
    after = time.time()
    assert seen["SPOTWATCH_ACTION"] == action
    assert seen["SPOTWATCH_SOURCE"] == source
    assert seen["SPOTWATCH_CLOUD"] == "gcp"
    assert seen["SPOTWATCH_INSTANCE_ID"] == gcp.instance_id
    assert int(before) + lead - 1 <= _epoch(seen["SPOTWATCH_NOTICE_TIME"]) <= after + lead
    assert gcp.count(status=403) == 0
    assert daemon.stop() == 0


def test_a_preemption_is_seen_within_a_second_at_poll_interval_5s(
    gcp: GcpMetadataSimulator, workdir: Path, daemons: Start
) -> None:
    """With poll_interval 5 s, `preempted` is followed by a hanging GET (wait_for_change with
    the last ETag, timeout_sec 5): the hook starts well within a second of the change, not at
    the next poll. While nothing changes, the poll asks nothing itself: the watch answers."""
    out = workdir / "env.jsonl"
    config = config_for(
        workdir, "gcp", gcp.endpoint, poll_interval="5s", hooks=[env_hook("h", out, ["terminate"])]
    )
    daemons(config)
    wait_for(lambda: gcp.hanging >= 2)  # both values watched
    time.sleep(2.5)  # the middle of a poll interval
    plain_before = gcp.count(path=PREFIX + PREEMPTED) - gcp.waited[PREFIX + PREEMPTED]
    raised = time.monotonic()
    gcp.preempt()
    wait_for(lambda: runs(out), timeout=5)
    assert time.monotonic() - raised < 1.0
    plain_after = gcp.count(path=PREFIX + PREEMPTED) - gcp.waited[PREFIX + PREEMPTED]
    assert plain_after == plain_before  # the poll woken by the watch read no value itself


def test_an_answer_without_metadata_flavor_is_not_believed(
    gcp: GcpMetadataSimulator, workdir: Path, daemons: Start
) -> None:
    """A stand-in that answers without `Metadata-Flavor: Google` is not the metadata server:
    its `preempted: TRUE` starts nothing, and the polls fail (status says why)."""
    out = workdir / "env.jsonl"
    gcp.foreign = True
    gcp.preempt()
    daemon = daemons(
        config_for(workdir, "gcp", gcp.endpoint, hooks=[env_hook("h", out, ["terminate"])])
    )
    wait_for(lambda: last_poll(workdir))
    time.sleep(1.0)
    assert runs(out) == []
    assert last_poll(workdir)["result"] == "error"
    assert "Metadata-Flavor" in daemon.log()


def test_a_burst_of_503s_is_transient(
    gcp: GcpMetadataSimulator, workdir: Path, daemons: Start
) -> None:
    """The metadata server answers 503 for under a second during maintenance: a burst of them
    on `preempted` (plain reads and hanging GETs alike) fails no poll, and the preemption that
    follows is seen."""
    out = workdir / "env.jsonl"
    config = config_for(
        workdir, "gcp", gcp.endpoint, poll_interval="1s", hooks=[env_hook("h", out, ["terminate"])]
    )
    daemon = daemons(config)
    wait_for(lambda: gcp.hanging >= 2)
    gcp.inject_status(503, path=PREFIX + PREEMPTED, count=4)
    gcp.set_value("instance/hostname", "renamed")  # wakes nothing we watch
    time.sleep(2.5)
    gcp.preempt()
    wait_for(lambda: runs(out), timeout=5)
    assert gcp.count(status=503) == 4
    assert "IMDS poll failed" not in daemon.log()


def test_the_hanging_get_falls_back_to_plain_reads_and_comes_back(
    gcp: GcpMetadataSimulator, workdir: Path, daemons: Start
) -> None:
    """When the hanging GET fails (connections reset), each poll reads the value itself,
    every poll_interval, and says so once; when the server is well again the watch resumes
    and the polls stop asking."""
    config = config_for(workdir, "gcp", gcp.endpoint, poll_interval="1s")
    daemon = daemons(config)
    wait_for(lambda: gcp.hanging >= 2)
    gcp.inject_reset(path=PREFIX + PREEMPTED, count=None)
    gcp.set_value(PREEMPTED, "FALSE ")  # a change: the hanging GET answers, then every read fails
    wait_for(lambda: "reading it every poll meanwhile" in daemon.log(), timeout=5)
    gcp.clear_faults()
    gcp.set_value(PREEMPTED, "FALSE")
    wait_for(lambda: "watching instance/preempted again" in daemon.log(), timeout=10)
    time.sleep(0.5)
    plain = gcp.count(path=PREFIX + PREEMPTED) - gcp.waited[PREFIX + PREEMPTED]
    time.sleep(3.0)
    assert gcp.count(path=PREFIX + PREEMPTED) - gcp.waited[PREFIX + PREEMPTED] == plain
    assert daemon.log().count("reading it every poll meanwhile") == 1


def test_a_preemption_already_there_at_start_is_a_notice(
    gcp: GcpMetadataSimulator, workdir: Path, daemons: Start
) -> None:
    """`preempted` is TRUE before the daemon starts (it was restarted, or started late): the
    first poll takes it for a notice and the hooks run."""
    out = workdir / "env.jsonl"
    gcp.preempt()
    daemons(config_for(workdir, "gcp", gcp.endpoint, hooks=[env_hook("h", out, ["terminate"])]))
    (seen,) = wait_for(lambda: runs(out))
    assert seen["SPOTWATCH_SOURCE"] == "gcp-preempted"


def test_a_restart_during_a_response_finishes_it_without_rerunning(
    gcp: GcpMetadataSimulator, workdir: Path, daemons: Start
) -> None:
    """The daemon is killed while the second hook of a preemption's response runs. Started
    again (preempted still TRUE), it keeps the notice's time, does not run the first hook
    again and runs the second once more (it never finished)."""
    out = workdir / "env.jsonl"
    hooks = [
        env_hook("first", out, ["terminate"], order=0),
        env_hook("second", out, ["terminate"], order=1, sleep=8),
    ]
    config = config_for(workdir, "gcp", gcp.endpoint, gcp={"notice": "10m"}, hooks=hooks)
    first = daemons(config)
    gcp.preempt()
    wait_for(lambda: len(runs(out)) == 2)
    first.stop(signal.SIGKILL)
    noticed = runs(out)[0]["SPOTWATCH_NOTICE_TIME"]
    time.sleep(1.1)  # a later start would time a new notice later
    daemons(config)
    wait_for(lambda: len(runs(out)) == 3, timeout=15)
    third = runs(out)[2]
    assert third["SPOTWATCH_NOTICE_TIME"] == noticed
    record = next(iter(state_of(workdir)["responses"].values()))
    steps = {s["name"]: s["status"] for s in record["steps"]}
    assert steps["hook:first"] == "ok"


def test_aws_only_parts_configured_on_gcp_are_said_once_and_never_reached(
    gcp: GcpMetadataSimulator, workdir: Path, daemons: Start
) -> None:
    """ECS, load balancers, Auto Scaling, the instance action, EC2 hibernation and the AWS
    event sinks all configured, on GCP: the daemon starts, logs one line per part at start,
    handles a preemption with its hooks, and never asks AWS's IMDS (a stand-in here, which
    sees no request) for anything."""
    out = workdir / "env.jsonl"
    with ImdsSimulator() as imds:
        config = config_for(
            workdir,
            "gcp",
            gcp.endpoint,
            imds={"endpoint": imds.endpoint, "timeout": "500ms"},
            ecs={"enabled": True, "agent_url": imds.endpoint},
            load_balancer={"enabled": True},
            autoscaling={"enabled": True, "detach": True},
            instance={"after_response": "terminate"},
            hibernate={"trigger": "command"},
            events={"sns_topic_arn": "arn:aws:sns:eu-west-1:123456789012:fleet"},
            hooks=[env_hook("h", out, ["terminate"])],
        )
        daemon = daemons(config)
        gcp.preempt()
        wait_for(lambda: runs(out))
        assert daemon.stop() == 0
        log = daemon.log()
        for part in ("ECS", "Elastic Load Balancing", "Auto Scaling", "EC2 instance action"):
            assert log.count(f"{part} is AWS-only; off on gcp") == 1, (part, log)
        assert log.count("EC2 hibernation is AWS-only") == 1
        assert log.count("the AWS event sinks (SNS, EventBridge) is AWS-only") == 1
        assert imds.count() == 0


def test_shutdown_and_reload_do_not_wait_for_a_hanging_get(
    gcp: GcpMetadataSimulator, workdir: Path, daemons: Start
) -> None:
    """poll_interval 30 s: the hanging GETs wait up to 30 s each. A reload (SIGHUP) is done
    at once, and SIGTERM ends the daemon within a second or two, not when they answer."""
    config = config_for(workdir, "gcp", gcp.endpoint, poll_interval="30s")
    daemon = daemons(config)
    wait_for(lambda: gcp.hanging >= 2)
    daemon.send(signal.SIGHUP)
    wait_for(lambda: "config reloaded" in daemon.log(), timeout=3)
    began = time.monotonic()
    assert daemon.stop(timeout=10) == 0
    assert time.monotonic() - began < 3.0
