"""Notice parsing: every valid IMDS form is understood, and nothing from the wire raises."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spotwatch.detection.notices import (
    REBALANCE,
    SOURCE_INSTANCE_ACTION,
    SOURCE_REBALANCE,
    SOURCE_TERMINATION_TIME,
    Notice,
    excerpt,
    parse_instance_action,
    parse_rebalance,
    parse_termination_time,
    parse_utc_time,
)

WHEN = datetime(2017, 9, 18, 8, 22, tzinfo=timezone.utc)


def action_body(action: object, time: object) -> bytes:
    return json.dumps({"action": action, "time": time}).encode()


@pytest.mark.parametrize("action", ["terminate", "stop", "hibernate"])
def test_instance_action_every_action(action: str) -> None:
    """Each of the three documented actions with IMDS's time format is a notice."""
    parsed = parse_instance_action(action_body(action, "2017-09-18T08:22:00Z"))
    assert parsed.usable
    assert parsed.notice == Notice(action, WHEN, "2017-09-18T08:22:00Z", SOURCE_INSTANCE_ACTION)


@pytest.mark.parametrize(
    "text",
    [
        "2017-09-18T08:22:00Z",
        "2017-09-18T08:22:00z",
        "2017-09-18t08:22:00Z",
        "2017-09-18T08:22:00+00:00",
        "2017-09-18T08:22:00.000Z",
        "2017-09-18T08:22:00.000000Z",
        " 2017-09-18T08:22:00Z\n",
    ],
)
def test_utc_time_tolerated_forms(text: str) -> None:
    """IMDS's format, with the tolerated variations (fractions, +00:00, case, whitespace)."""
    assert parse_utc_time(text) == WHEN


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "not a time",
        "2017-09-18",
        "2017-09-18T08:22:00",  # no zone: not known to be UTC
        "2017-09-18T08:22:00+01:00",  # not UTC
        "2017-13-18T08:22:00Z",  # month 13
        "2017-09-18T25:22:00Z",
        "2017-02-30T08:22:00Z",
        "1" * 100,
        "2017-09-18T08:22:00ZZ",
        "٢٠١٧-09-18T08:22:00Z",  # non-ASCII digits
    ],
)
def test_utc_time_rejects(text: str) -> None:
    """Anything that is not a UTC time is None, never an exception."""
    assert parse_utc_time(text) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # One-digit fraction: 3.11's fromisoformat takes it, 3.9's does not.
        ("2017-09-18T08:22:00.5Z", WHEN + timedelta(seconds=0.5)),
        ("2017-09-18T08:22:00.123456789Z", WHEN + timedelta(microseconds=123456)),
        ("2017-09-18 08:22:00Z", None),  # space separator: not IMDS's format
        ("20170918T082200Z", None),  # basic format: 3.11 only
        ("2017-09-18T08:22Z", None),  # no seconds
        ("2017-09-18T08:22:00-00:00", None),
    ],
)
def test_utc_time_same_answer_on_every_python(text: str, expected: Optional[datetime]) -> None:
    """Forms on which Python versions' `fromisoformat` disagree get one fixed answer: the same
    body must not be a notice on 3.11 and none on 3.9."""
    assert parse_utc_time(text) == expected


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"terminate",
        b"{",
        b"[]",
        b'"terminate"',
        b"null",
        b"{}",
        action_body("reboot", "2017-09-18T08:22:00Z"),
        action_body("Terminate", "2017-09-18T08:22:00Z"),
        action_body(None, "2017-09-18T08:22:00Z"),
        action_body(["terminate"], "2017-09-18T08:22:00Z"),
        action_body({"a": 1}, "2017-09-18T08:22:00Z"),
        action_body("terminate", "tomorrow"),
        action_body("terminate", 1505722920),
        action_body("terminate", None),
        json.dumps({"action": "terminate"}).encode(),
        b"\xff\xfe\x00garbage\x80",
        bytes(range(256)),
        # Deep nesting: json raises RecursionError, not ValueError.
        pytest.param(b"[" * 200_000, id="deep-list"),
        pytest.param(b'{"a":' * 100_000, id="deep-object"),
    ],
)
def test_malformed_instance_action_never_raises(body: bytes) -> None:
    """Malformed instance-action bodies come back unusable, with a short reason."""
    parsed = parse_instance_action(body)
    assert not parsed.usable
    assert parsed.notice is None
    assert parsed.problem and len(parsed.problem) < 200


def test_problem_text_is_bounded_for_huge_values() -> None:
    """A huge unknown action does not turn into a huge log line."""
    parsed = parse_instance_action(action_body("x" * 100_000, "2017-09-18T08:22:00Z"))
    assert parsed.problem is not None and len(parsed.problem) < 200


@given(st.binary(max_size=300))
@settings(max_examples=300, deadline=None)
def test_arbitrary_bytes_never_raise(body: bytes) -> None:
    """No body at all makes a parser raise."""
    parse_instance_action(body)
    parse_termination_time(body)
    parse_rebalance(body)
    excerpt(body)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
    max_leaves=20,
)


@given(JSON)
@settings(max_examples=100, deadline=None)
def test_arbitrary_json_never_raises(value: object) -> None:
    """No JSON document makes the JSON parsers raise."""
    body = json.dumps(value).encode()
    parse_instance_action(body)
    parse_rebalance(body)


def test_termination_time_is_a_terminate_notice() -> None:
    """A UTC time in spot/termination-time is a terminate notice from that source."""
    parsed = parse_termination_time(b"2017-09-18T08:22:00Z\n")
    assert parsed.notice == Notice(
        "terminate", WHEN, "2017-09-18T08:22:00Z", SOURCE_TERMINATION_TIME
    )


@pytest.mark.parametrize("body", [b"", b"none", b"\xff\xfe", b'{"time": "2017-09-18T08:22:00Z"}'])
def test_non_time_termination_time_is_no_notice(body: bytes) -> None:
    """A body that is not a time means no notice (AWS: "a value that is not a time value")."""
    parsed = parse_termination_time(body)
    assert parsed.usable and parsed.notice is None


def test_rebalance_forms() -> None:
    """`{"noticeTime": ...}` is a rebalance notice; anything else is unusable, not an error."""
    parsed = parse_rebalance(b'{"noticeTime": "2017-09-18T08:22:00Z"}')
    assert parsed.notice == Notice(REBALANCE, WHEN, "2017-09-18T08:22:00Z", SOURCE_REBALANCE)
    for body in (b"{}", b'{"noticeTime": 5}', b'{"noticeTime": "soon"}', b"\x00", b"[" * 100_000):
        assert not parse_rebalance(body).usable


def test_notice_json_round_trip() -> None:
    """A notice survives to_json/from_json unchanged (the state file depends on it)."""
    notice = Notice("stop", WHEN, "2017-09-18T08:22:00Z", SOURCE_INSTANCE_ACTION)
    assert Notice.from_json(notice.to_json()) == notice
    assert notice.epoch == WHEN.timestamp()


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"action": "stop", "time": "soon", "source": "x"},
        {"action": "stop", "time": 5, "source": "x"},
        {"action": 5, "time": "2017-09-18T08:22:00Z", "source": "x"},
        {"action": "stop", "time": "2017-09-18T08:22:00Z", "source": None},
    ],
)
def test_notice_from_json_refuses_bad_data(data: dict[str, object]) -> None:
    """Bad stored notices raise ValueError (or KeyError), never anything else."""
    with pytest.raises((ValueError, KeyError)):
        Notice.from_json(data)  # type: ignore[arg-type]


def test_excerpt_is_printable_and_bounded() -> None:
    """Bodies are shown escaped and truncated in log lines."""
    shown = excerpt(b"\x00\xffabc" + b"z" * 500)
    assert shown.isprintable() and len(shown) < 200 and shown.endswith("…")
