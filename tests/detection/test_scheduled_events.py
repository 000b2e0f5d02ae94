"""Scheduled events as the monitor reads them: the strict time format, which states count,
and what each code asks of the instance."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, Iterator, List

import pytest

from spotwatch.clouds.aws.imds import ImdsClient
from spotwatch.clouds.aws.monitors import ScheduledEventsMonitor
from spotwatch.clouds.aws.scheduled import SCHEDULED, parse_event_time, parse_scheduled
from spotwatch.simulator.imds import ImdsSimulator


def event(**fields: Any) -> Dict[str, Any]:
    base = {
        "Code": "system-reboot",
        "Description": "scheduled reboot",
        "EventId": "instance-event-0d59937288b749b32",
        "NotBefore": "21 Jan 2019 09:00:43 GMT",
        "NotAfter": "21 Jan 2019 09:17:23 GMT",
        "State": "active",
    }
    base.update(fields)
    return base


def body(*events: Dict[str, Any]) -> bytes:
    return json.dumps(list(events)).encode()


def test_the_imds_time_format_is_parsed_to_utc() -> None:
    assert parse_event_time("21 Jan 2019 09:00:43 GMT") == datetime(
        2019, 1, 21, 9, 0, 43, tzinfo=timezone.utc
    )
    assert parse_event_time("1 Feb 2019 00:00:00 GMT") == datetime(2019, 2, 1, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    "text",
    [
        "2019-01-21T09:00:43Z",  # ISO: not what this path writes
        "21 Jan 2019 09:00:43 UTC",
        "21 Jan 2019 09:00:43",
        "21 jan 2019 09:00:43 GMT",
        "21 January 2019 09:00:43 GMT",
        " 21 Jan 2019 09:00:43 GMT",
        "31 Feb 2019 09:00:43 GMT",
        "21 Jan 2019 24:00:43 GMT",
        "Mon, 21 Jan 2019 09:00:43 GMT",
        "",
        None,
        1548061243,
    ],
)
def test_anything_else_is_not_a_time(text: object) -> None:
    assert parse_event_time(text) is None


def test_each_code_means_an_action_and_hooks_get_notbefore_in_iso() -> None:
    codes = {
        "instance-stop": "stop",
        "instance-retirement": "stop",
        "instance-reboot": "reboot",
        "system-reboot": "reboot",
        "system-maintenance": "maintenance",
    }
    events = [event(Code=code, EventId=f"e-{code}") for code in codes]
    parsed, problem = parse_scheduled(body(*events))
    assert problem is None and parsed is not None
    assert [(n.event_code, n.action) for n in parsed.notices] == list(codes.items())
    first = parsed.notices[0]
    assert first.time_text == "2019-01-21T09:00:43Z"
    assert first.source == "scheduled-event"
    assert first.event_id == "e-instance-stop"


def test_completed_events_are_ignored_and_canceled_ones_are_cancel_notices() -> None:
    parsed, _ = parse_scheduled(
        body(event(EventId="done", State="completed"), event(EventId="off", State="canceled"))
    )
    assert parsed is not None and parsed.problems == ()
    (cancel,) = parsed.notices
    assert (cancel.action, cancel.event_id, cancel.canceled_action) == ("cancel", "off", "reboot")


def test_an_event_with_a_malformed_time_is_ignored_with_a_reason_the_rest_count() -> None:
    parsed, _ = parse_scheduled(
        body(event(EventId="bad", NotBefore="2019-01-21T09:00:43Z"), event(EventId="good"))
    )
    assert parsed is not None
    assert [n.event_id for n in parsed.notices] == ["good"]
    assert len(parsed.problems) == 1 and "bad" in parsed.problems[0]


@pytest.mark.parametrize("raw", [b"{}", b"not json", b"\xff", b'"x"'])
def test_a_body_that_is_no_list_is_unusable(raw: bytes) -> None:
    parsed, problem = parse_scheduled(raw)
    assert parsed is None and problem


@pytest.fixture
def imds() -> Iterator[ImdsSimulator]:
    with ImdsSimulator() as simulator:
        yield simulator


def check(imds: ImdsSimulator, monitor: Any = None) -> Any:
    monitor = monitor or ScheduledEventsMonitor(ImdsClient(imds.endpoint, timeout=1.0), 1.0)
    return monitor.check(time.monotonic() + 2.0)


def test_the_simulator_answers_an_empty_list_and_the_monitor_sees_none(
    imds: ImdsSimulator,
) -> None:
    assert imds._lookup("/latest/" + SCHEDULED)[:2] == (200, b"[]")
    reading = check(imds)
    assert reading.ok and reading.notices == ()


def test_a_404_means_no_events_as_the_metadata_mock_answers(imds: ImdsSimulator) -> None:
    imds.set_path(SCHEDULED, 404, "Not Found")
    reading = check(imds)
    assert reading.ok and reading.notices == () and reading.speaks_for is None


def test_a_listed_event_is_seen_and_an_unreadable_one_vouches_for_no_absence(
    imds: ImdsSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    soon = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(minutes=5)
    event_id = imds.scheduled.add("instance-reboot", soon)
    monitor = ScheduledEventsMonitor(ImdsClient(imds.endpoint, timeout=1.0), 1.0)
    reading = check(imds, monitor)
    (notice,) = reading.notices
    assert (notice.action, notice.event_id, notice.time) == ("reboot", event_id, soon)
    other = imds.scheduled.add("instance-stop", soon)
    imds.scheduled.set_field(other, "NotBefore", "soon")
    reading = check(imds, monitor)
    assert [n.event_id for n in reading.notices] == [event_id]
    assert reading.speaks_for == frozenset()
    check(imds, monitor)
    warnings: List[str] = [r.getMessage() for r in caplog.records if "soon" in r.getMessage()]
    assert len(warnings) == 1  # once, not every poll
