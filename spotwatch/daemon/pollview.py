"""What one poll means for the daemon's cadence and for systemd's STATUS= line: pure
functions of the poll's report and the config, so the shell only applies them."""

from __future__ import annotations

from typing import Sequence

from spotwatch.config.schema import Config
from spotwatch.detection.watcher import PollReport
from spotwatch.response.responder import Response

# A rebalance recommendation may come hours before a notice, or never one: poll faster for
# at most this long after it was issued, then at `poll_interval` again.
ELEVATED_RISK_CAP = 3600.0


def wanted_interval(config: Config, report: PollReport, wall: float) -> float:
    """While a rebalance recommendation stands (and no notice has come yet), poll every
    `rebalance.poll_interval`: a notice seen 4 s sooner is 4 s more for the hooks."""
    base, fast = config.poll_interval, config.rebalance.poll_interval
    recommendation = report.known.get("rebalance")
    elevated = (
        fast < base
        and recommendation is not None
        and report.notice is None
        and wall - recommendation.epoch < ELEVATED_RISK_CAP
    )
    return fast if elevated else base


def status_line(
    config: Config, report: PollReport, running: Sequence[Response], interval: float
) -> str:
    """systemd's STATUS= after a poll: what the daemon is doing, in one line."""
    if not report.ok:
        return f"last poll failed: {report.errors[0][:120] if report.errors else 'no answer'}"
    if running:
        first = min(running, key=lambda r: r.deadline_epoch)
        return f"{first.notice.action} notice for {first.notice.time_text}; responding"
    if report.notice is not None:
        return f"{report.notice.action} notice for {report.notice.time_text}; response done"
    if report.result == "degraded":
        why = next((r.degraded for r in report.monitors.values() if r.degraded), "")
        return f"polling; degraded: {why}"[:160]
    if "rebalance" in report.known:
        return f"rebalance recommendation seen; polling every {interval:g} s"
    return f"polling every {config.poll_interval:g} s; no notice"
