"""Durations: how operators write times in config, and how spotwatch shows them back."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spotwatch.config.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("written", "seconds"),
    [
        (5, 5.0),
        (0, 0.0),
        (2.5, 2.5),
        ("5", 5.0),
        ("0.25", 0.25),
        ("500ms", 0.5),
        ("5s", 5.0),
        ("1.5s", 1.5),
        ("2m", 120.0),
        ("6h", 21600.0),
        ("1m30s", 90.0),
        (" 10s ", 10.0),
    ],
)
def test_numbers_are_seconds_and_strings_take_units(written: object, seconds: float) -> None:
    """Numbers mean seconds; strings may carry ms/s/m/h units, as CONTRACT §2 shows."""
    assert parse_duration(written) == seconds


@pytest.mark.parametrize("written", ["soon", "", "5 minutes", "5d", "ms", "1.2.3s", "nan", "inf"])
def test_words_that_are_not_durations_are_refused_with_an_example(written: str) -> None:
    """The message shows the expected shape and quotes what was written."""
    with pytest.raises(ValueError) as caught:
        parse_duration(written)
    assert str(caught.value) == f'expected a duration like "30s", got "{written}"'


@pytest.mark.parametrize("written", [True, False, None, [5], {"s": 5}, float("nan")])
def test_non_numbers_and_booleans_are_refused(written: object) -> None:
    """`timeout: yes` is a typo, not one second, even though bool is an int in Python."""
    with pytest.raises(ValueError, match="expected a duration"):
        parse_duration(written)


@pytest.mark.parametrize("written", [-1, -0.5, "-5s", "-2"])
def test_negative_durations_are_refused(written: object) -> None:
    """A time span cannot be negative; the message says so rather than 'not a duration'."""
    with pytest.raises(ValueError, match="non-negative"):
        parse_duration(written)


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0, "0s"),
        (0.5, "500ms"),
        (5, "5s"),
        (1.5, "1.5s"),
        (90, "1m30s"),
        (120, "2m"),
        (21600, "6h"),
    ],
)
def test_format_duration_reads_like_the_config(seconds: float, shown: str) -> None:
    """Displayed durations look like what an operator would write."""
    assert format_duration(seconds) == shown


@given(st.integers(min_value=0, max_value=10**9))
def test_format_then_parse_round_trips_to_the_millisecond(millis: int) -> None:
    """Whatever spotwatch prints can be pasted back into a config file."""
    seconds = millis / 1000
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds, abs=0.0005)
