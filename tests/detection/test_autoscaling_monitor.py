"""The Auto Scaling termination monitor against the simulator: `Terminated` is a terminate
notice timed first seen + budget, kept across re-reads and restarts; 404 is silence."""

from __future__ import annotations

import logging
import time
from typing import Callable, List

import pytest

from spotwatch.clouds.aws.imds import ImdsClient
from spotwatch.clouds.aws.monitors import AutoscalingMonitor, monitors_for
from spotwatch.config.schema import AutoscalingSettings, Config
from spotwatch.detection.tracker import Change
from spotwatch.detection.watcher import PollReport, Watcher
from spotwatch.simulator.imds import ImdsSimulator

MakeClient = Callable[..., ImdsClient]
BUDGET = 600.0


def soon() -> float:
    return time.monotonic() + 0.9


class Quiet:
    def __init__(self) -> None:
        self.changes: List[Change] = []

    def on_notice(self, tracker: str, observation: object) -> None:
        self.changes.append(observation.change)  # type: ignore[attr-defined]

    def on_poll(self, report: PollReport) -> None:
        pass


def test_no_group_means_no_notice_no_error_and_no_log_line(
    sim: ImdsSimulator, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="spotwatch")
    watcher = Watcher([AutoscalingMonitor(make_client(), BUDGET)], Quiet(), 0.2)
    reports = [watcher.poll_once(soon()) for _ in range(3)]
    assert all(r.ok and not r.errors and not r.known for r in reports)
    assert [r for r in caplog.records if r.levelno >= logging.INFO] == []


def test_terminated_is_a_terminate_notice_timed_first_seen_plus_the_budget(
    sim: ImdsSimulator, make_client: MakeClient
) -> None:
    sim.set_asg_state("InService")
    monitor = AutoscalingMonitor(make_client(), BUDGET)
    assert monitor.check(soon()).notices == ()
    sim.set_asg_state("Terminated")
    before = time.time()
    notice = monitor.check(soon()).notice
    assert notice is not None
    assert (notice.action, notice.source) == ("terminate", "target-lifecycle-state")
    assert before - 1 <= notice.epoch - BUDGET <= time.time()
    time.sleep(1.1)  # a later read must not move the time
    assert monitor.check(soon()).notice == notice


def test_a_restart_keeps_the_first_seen_time(sim: ImdsSimulator, make_client: MakeClient) -> None:
    sim.set_asg_state("Terminated")
    first = Quiet()
    watcher = Watcher([AutoscalingMonitor(make_client(), BUDGET)], first, 0.2)
    watcher.poll_once(soon())
    stored = {name: t for name, t in watcher.trackers.items()}
    time.sleep(1.1)
    again = Quiet()
    restarted = Watcher([AutoscalingMonitor(make_client(), BUDGET)], again, 0.2, trackers=stored)
    restarted.poll_once(soon())
    assert first.changes == [Change.NEW]
    assert again.changes == []  # the same notice: neither new nor moved


def test_auto_watches_only_an_instance_in_a_group(
    sim: ImdsSimulator, make_client: MakeClient
) -> None:
    client = make_client()
    auto = Config()
    assert "autoscaling" not in [m.name for m in monitors_for(auto, client)]
    sim.set_asg_state("InService")
    assert "autoscaling" in [m.name for m in monitors_for(auto, client)]
    off = Config(autoscaling=AutoscalingSettings(enabled=False))
    assert "autoscaling" not in [m.name for m in monitors_for(off, client)]
