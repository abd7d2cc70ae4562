from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.kit.durations import format_duration, parse_duration

SECOND = dt.timedelta(seconds=1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", dt.timedelta(seconds=30)),
        ("10m", dt.timedelta(minutes=10)),
        ("1h", dt.timedelta(hours=1)),
        ("2d", dt.timedelta(days=2)),
        ("1w", dt.timedelta(weeks=1)),
        ("1h30m", dt.timedelta(hours=1, minutes=30)),
        ("1d12h", dt.timedelta(days=1, hours=12)),
        ("1w2d3h4m5s", dt.timedelta(weeks=1, days=2, hours=3, minutes=4, seconds=5)),
        ("90m", dt.timedelta(minutes=90)),
        ("0h30m", dt.timedelta(minutes=30)),
        ("007s", dt.timedelta(seconds=7)),
        ("999999999d", dt.timedelta(days=999_999_999)),
    ],
)
def test_durations_people_write(text: str, expected: dt.timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "x", "30", "h", "1.5h", "-1h", "+1h", "1H", " 1h", "1h ", "1 h", "1h,30m", "1y", "1ms"],
)
def test_text_that_is_not_a_duration_is_refused_with_an_example(text: str) -> None:
    with pytest.raises(ValueError, match="expected a duration such as 30s, 10m, 1h or 1d") as info:
        parse_duration(text)
    assert repr(text) in str(info.value)


@pytest.mark.parametrize("text", ["30m1h", "1h1h", "1s1m", "2d1w"])
def test_parts_go_largest_first_each_once(text: str) -> None:
    with pytest.raises(ValueError, match=r"largest unit first \(1h30m\)"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["0s", "0h0m", "000d"])
def test_a_zero_duration_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="longer than zero"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["1000000000d", "1" * 30 + "s", "9" * 5000 + "m"])
def test_a_duration_too_long_to_hold_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="too long; the most is 999999999d"):
        parse_duration(text)


def test_digits_outside_ascii_are_refused() -> None:
    with pytest.raises(ValueError, match="expected a duration"):
        parse_duration("\u0661h")  # ARABIC-INDIC DIGIT ONE, which int() would accept


@pytest.mark.parametrize(
    ("duration", "text"),
    [
        (dt.timedelta(seconds=30), "30s"),
        (dt.timedelta(minutes=90), "1h30m"),
        (dt.timedelta(hours=36), "1d12h"),
        (dt.timedelta(days=14), "2w"),
        (dt.timedelta(days=8, seconds=1), "1w1d1s"),
    ],
)
def test_canonical_form(duration: dt.timedelta, text: str) -> None:
    assert format_duration(duration) == text


@pytest.mark.parametrize(
    "duration",
    [dt.timedelta(0), dt.timedelta(seconds=-5), dt.timedelta(milliseconds=1500)],
)
def test_only_positive_whole_seconds_have_a_text_form(duration: dt.timedelta) -> None:
    with pytest.raises(ValueError, match="positive whole-second"):
        format_duration(duration)


@given(st.timedeltas(min_value=SECOND, max_value=dt.timedelta(days=999_999_999)))
def test_every_text_form_reads_back(duration: dt.timedelta) -> None:
    duration -= dt.timedelta(microseconds=duration.microseconds)
    assert parse_duration(format_duration(duration)) == duration


@given(
    st.lists(st.integers(min_value=0, max_value=10_000), min_size=5, max_size=5).filter(any),
)
def test_any_written_duration_has_one_canonical_form(amounts: list[int]) -> None:
    text = "".join(f"{n}{unit}" for n, unit in zip(amounts, "wdhms", strict=True))
    duration = parse_duration(text)
    canonical = format_duration(duration)
    assert parse_duration(canonical) == duration
    assert format_duration(parse_duration(canonical)) == canonical
