"""Metrics: the textfile and /metrics after a notice and its steps; /healthz; the cost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

from operator_support import REPO, clean_env, free_port, parse_metrics, wait_for
from testkit import DaemonProcess

from spotwatch.detection.watcher import PollReport
from spotwatch.telemetry.metrics import Metrics, TextfileWriter, parse_listen

TERMINATE_BY_SPOT = '{action="terminate",source="instance-action"}'

def _get(url: str):
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as failure:
        return failure.code, failure.read().decode()


def test_textfile_and_http_metrics_after_a_notice_then_healthz_goes_stale(
    write_config, hook_script, imds, tmp_path
):
    prom = tmp_path / "spotwatch.prom"
    port = free_port()
    out = tmp_path / "hooks.out"
    config = write_config(
        [
            {"name": "good", "command": [hook_script("good", out)]},
            {"name": "bad", "command": [hook_script("bad", out, exit_code=1)], "order": 1},
        ],
        metrics={"textfile": str(prom), "listen": f"127.0.0.1:{port}"},
    )
    log = open(tmp_path / "daemon.log", "wb")  # noqa: SIM115 - closed below
    daemon = subprocess.Popen(
        [sys.executable, "-m", "spotwatch", "run", "-c", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=clean_env(),
        cwd=str(REPO),
    )
    try:
        wait_for(prom.exists)
        assert _get(f"http://127.0.0.1:{port}/healthz")[0] == 200
        imds.raise_notice("terminate", 60)

        def settled():
            samples = parse_metrics(prom.read_text())
            return (
                samples
                if ("spotwatch_step_failures_total", '{step="hook:bad"}') in samples
                and (
                    "spotwatch_step_duration_seconds",
                    '{step="hook:bad"}',
                )
                in samples
                else None
            )

        samples = wait_for(settled)
        assert samples[("spotwatch_polls_total", '{result="notice"}')] >= 1
        assert samples[("spotwatch_polls_total", '{result="ok"}')] >= 1
        assert samples[("spotwatch_polls_total", '{result="error"}')] == 0
        assert samples[("spotwatch_notices_total", TERMINATE_BY_SPOT)] == 1
        assert samples[("spotwatch_notices_total", '{action="stop",source="instance-action"}')] == 0
        assert samples[("spotwatch_step_duration_seconds", '{step="hook:good"}')] > 0
        assert samples[("spotwatch_step_failures_total", '{step="hook:good"}')] == 0
        assert samples[("spotwatch_step_failures_total", '{step="hook:bad"}')] == 1
        assert abs(samples[("spotwatch_last_poll_success_timestamp_seconds", "")] - time.time()) < 5
        assert 0 < samples[("spotwatch_detection_latency_seconds", "")] < 1.0
        assert samples[("spotwatch_imds_token_renewals_total", "")] >= 1
        status, body = _get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200
        served = parse_metrics(body)
        assert served[("spotwatch_notices_total", TERMINATE_BY_SPOT)] == 1
        assert not list(tmp_path.glob(".spotwatch.prom*"))  # no temp files left behind

        imds.stop()  # IMDS stops answering; 3 intervals of 200 ms later /healthz says so
        time.sleep(1.0)
        status, body = wait_for(
            lambda: (lambda a: a if a[0] == 503 else None)(
                _get(f"http://127.0.0.1:{port}/healthz")
            ),
            timeout=5,
        )
        assert "s ago" in body
        errors = parse_metrics(prom.read_text())[("spotwatch_polls_total", '{result="error"}')]
        assert errors >= 1
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(20) == 0
        log.close()


def test_textfile_rewrite_costs_well_under_a_millisecond(tmp_path):
    metrics = Metrics(5.0)
    writer = TextfileWriter()
    path = str(tmp_path / "spotwatch.prom")
    report = PollReport(0.0, 0.001, time.time(), "ok", {}, {}, frozenset(), ())
    rounds = 500
    started = time.process_time()
    for _ in range(rounds):
        metrics.on_poll(report)
        assert writer.write(path, metrics.render())
    per_poll = (time.process_time() - started) / rounds
    print(f"textfile render + atomic rewrite: {per_poll * 1e6:.0f} us CPU per poll")
    assert per_poll < 0.001
    assert (tmp_path / "spotwatch.prom").stat().st_mode & 0o777 == 0o644


def test_the_textfile_never_writes_through_a_planted_symlink(tmp_path):
    """Anyone who may write the textfile folder plants symlinks to a root-owned file: at the
    temp name the writer used to pick (`.spotwatch.prom.<pid>.tmp`) and at the target. No
    write reaches the victim; the target becomes our own regular file (the rename replaces
    the link itself), and no temp file is left behind. Before the fix the victim was
    truncated and overwritten with metrics, as root."""
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    folder = tmp_path / "textfile"
    folder.mkdir()
    (folder / f".spotwatch.prom.{os.getpid()}.tmp").symlink_to(victim)
    target = folder / "spotwatch.prom"
    target.symlink_to(victim)
    metrics = Metrics(5.0)
    assert TextfileWriter().write(str(target), metrics.render())
    assert victim.read_text() == "precious\n"
    assert not target.is_symlink() and "spotwatch_" in target.read_text()
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [f".spotwatch.prom.{os.getpid()}.tmp", "spotwatch.prom"]
    )


def test_healthz_before_any_poll_and_listen_parsing():
    metrics = Metrics(1.0)
    assert metrics.health()[0] == 503
    assert parse_listen("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert parse_listen("[::1]:9464") == ("::1", 9464)


def test_the_gauges_the_alerts_need_poll_interval_and_next_scheduled_event():
    """`spotwatch_poll_interval_seconds` is the configured interval (a reload changes it);
    `spotwatch_next_scheduled_event_timestamp_seconds{code}` is the earliest NotBefore of the
    events listed and not canceled, by code; a failed poll keeps what the last good one saw."""
    from datetime import datetime, timezone

    from spotwatch.detection.notices import Notice

    def event(code, epoch, action="reboot"):
        when = datetime.fromtimestamp(epoch, timezone.utc)
        return Notice(action, when, when.isoformat(), "scheduled-event", f"id-{epoch}", code)

    def poll(result, known):
        return PollReport(0.0, 0.001, time.time(), result, {}, known, frozenset(), ())

    metrics = Metrics(5.0)
    metrics.on_poll(poll("ok", {}))
    samples = parse_metrics(metrics.render())
    assert samples[("spotwatch_poll_interval_seconds", "")] == 5.0
    assert not any(n == "spotwatch_next_scheduled_event_timestamp_seconds" for n, _ in samples)

    metrics.poll_interval = 2.5
    metrics.on_poll(poll("ok", {
        "scheduled/a": event("system-reboot", 2_000_000_000),
        "scheduled/b": event("system-reboot", 1_900_000_000),
        "scheduled/c": event("instance-stop", 1_950_000_000, "stop"),
        "scheduled/d": event("instance-retirement", 1_800_000_000, "cancel"),
    }))  # fmt: skip
    metrics.on_poll(poll("error", {}))
    samples = parse_metrics(metrics.render())
    assert samples[("spotwatch_poll_interval_seconds", "")] == 2.5
    name = "spotwatch_next_scheduled_event_timestamp_seconds"
    assert {labels: value for (n, labels), value in samples.items() if n == name} == {
        '{code="instance-stop"}': 1_950_000_000.0,
        '{code="system-reboot"}': 1_900_000_000.0,
    }


def test_a_response_resumed_after_a_restart_is_not_counted_again(write_config, imds, tmp_path):
    """A terminate notice is counted once by the daemon that saw it; the daemon stops in the
    middle of its hook and a new one takes the response up: the new daemon's
    `spotwatch_notices_total` does not count that notice again (a counter that restarts at
    0 and counts it once more makes Prometheus see two notices).
    (Before: every response started in a process counted, resumed ones too.)"""
    prom = tmp_path / "spotwatch.prom"
    started = tmp_path / "started"
    hook = {"name": "long", "command": f"echo x >> {started}; sleep 60", "timeout": "100s"}
    config = write_config([hook], metrics={"textfile": str(prom)})
    first = DaemonProcess(config, tmp_path / "first.log", env=clean_env())
    try:
        imds.raise_notice("terminate", 120)
        wait_for(started.exists, timeout=15)
        wait_for(lambda: _notices(prom) == 1)
        first.send(signal.SIGTERM)
        time.sleep(0.3)
        first.send(signal.SIGTERM)
        assert first.process.wait(20) == 0
    finally:
        first.stop(signal.SIGKILL)
    prom.unlink()
    again = DaemonProcess(config, tmp_path / "again.log", env=clean_env())
    try:
        wait_for(lambda: len(started.read_text().splitlines()) == 2, timeout=15)  # resumed
        wait_for(prom.exists)
        time.sleep(0.5)  # a few more polls, each rewriting the textfile
        assert _notices(prom) == 0
    finally:
        again.stop(signal.SIGKILL)


def _notices(prom) -> float:
    if not prom.exists():
        return -1
    return parse_metrics(prom.read_text()).get(("spotwatch_notices_total", TERMINATE_BY_SPOT), -1)
