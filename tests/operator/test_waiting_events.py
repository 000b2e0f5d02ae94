"""A scheduled event waiting for its moment is visible (CONTRACT §6): in `status` (`notices`
with `state` "waiting" and `starts`, never `notice`), in the gauge
`spotwatch_scheduled_events{code}`, and to event sinks (a `notice` event with `result`
"waiting"). The real daemon runs as a child process against the IMDS simulator, with a
webhook receiver and a metrics textfile."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from operator_support import parse_metrics, spotwatch, wait_for
from testkit import DaemonProcess, child_env

from spotwatch.state.files import iso

CODES = ("instance-stop", "instance-retirement", "instance-reboot", "system-reboot")


def _status(config) -> dict:
    """`status --json` ({} while the daemon has recorded nothing yet)."""
    result = spotwatch("status", "-c", str(config), "--json")
    return json.loads(result.stdout) if result.returncode == 0 else {}


def test_a_waiting_scheduled_event_is_in_status_metrics_and_events(
    write_config, imds, tmp_path, receiver
):
    """An instance-reboot event an hour ahead (lead 10 min) waits: `status` lists it as
    waiting with the moment its response starts, `notice` stays null, the gauge counts it
    by code, and the webhook hears a waiting `notice` event. Once the event moves inside
    the lead its response starts and `status` shows it responding or done. Before, nothing
    showed a waiting event at all."""
    sink = receiver()
    prom = tmp_path / "spotwatch.prom"
    config = write_config(
        scheduled_events={"poll_interval": "200ms", "lead": "10m"},
        metrics={"textfile": str(prom)},
        webhook={"url": sink.url(), "retries": 0},
    )
    not_before = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(hours=1)
    event_id = imds.scheduled.add("instance-reboot", not_before)
    daemon = DaemonProcess(config, tmp_path / "daemon.log", env=child_env())
    try:
        doc = wait_for(lambda: (d := _status(config)).get("notices") and d)
        assert doc["notice"] is None
        [waiting] = doc["notices"]
        assert waiting["state"] == "waiting" and waiting["event_id"] == event_id
        assert (waiting["action"], waiting["event_code"]) == ("reboot", "instance-reboot")
        assert waiting["starts"] == iso((not_before - timedelta(minutes=10)).timestamp())
        assert waiting["deadline"] is not None
        table = spotwatch("status", "-c", str(config)).stdout
        assert "waiting:" in table and "instance-reboot" in table

        samples = wait_for(lambda: prom.exists() and parse_metrics(prom.read_text()))
        gauge = {c: samples[("spotwatch_scheduled_events", f'{{code="{c}"}}')] for c in CODES}
        assert gauge == {c: (1 if c == "instance-reboot" else 0) for c in CODES}

        wait_for(lambda: sink.events)
        [told] = sink.events
        assert (told["event"], told["result"], told["event_id"]) == ("notice", "waiting", event_id)
        assert told["starts"] == waiting["starts"]

        imds.scheduled.move(event_id, datetime.now(timezone.utc) + timedelta(minutes=5))
        moved = wait_for(lambda: (d := _status(config)).get("notice") and d)
        assert moved["notice"]["event_id"] == event_id
        assert [n["state"] for n in moved["notices"]] in (["responding"], ["done"])
    finally:
        daemon.stop()
