from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.unit.planning.test_quiet_hours import instants_near_clock_changes

from tidings.planning.rules.digest_schedule import (
    Cadence,
    CadenceKind,
    due_at,
    next_local_hour,
    window_end,
)

UTC = dt.UTC
TICK = dt.timedelta(microseconds=1)
PARIS = "Europe/Paris"
NEW_YORK = "America/New_York"
ZONES = [
    "UTC",
    PARIS,
    NEW_YORK,
    "Australia/Sydney",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
    "America/St_Johns",
    "Pacific/Chatham",
    "Europe/Dublin",
    "America/Santiago",
    "Asia/Beirut",
]

instants = st.datetimes(dt.datetime(1971, 1, 1), dt.datetime(2100, 1, 1), timezones=st.just(UTC))
windows = st.timedeltas(min_value=TICK, max_value=dt.timedelta(days=30))


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


# window_end


@pytest.mark.parametrize(
    ("now", "window", "end"),
    [
        (utc(2026, 6, 1, 10, 15), dt.timedelta(hours=1), utc(2026, 6, 1, 11)),
        (utc(2026, 6, 1, 10, 59, 59, 999_999), dt.timedelta(hours=1), utc(2026, 6, 1, 11)),
        (utc(2026, 6, 1, 11), dt.timedelta(hours=1), utc(2026, 6, 1, 12)),
        (utc(2026, 6, 1, 10, 15), dt.timedelta(minutes=10), utc(2026, 6, 1, 10, 20)),
        (utc(2026, 6, 1, 10, 15), dt.timedelta(days=1), utc(2026, 6, 2)),
        (utc(1970, 1, 1), dt.timedelta(minutes=7), utc(1970, 1, 1, 0, 7)),
        (utc(1969, 12, 31, 23, 59), dt.timedelta(minutes=7), utc(1970, 1, 1)),
    ],
)
def test_window_end(now: dt.datetime, window: dt.timedelta, end: dt.datetime) -> None:
    assert window_end(now, window) == end


def test_window_end_reads_any_aware_datetime_as_its_instant() -> None:
    now = dt.datetime(2026, 6, 1, 12, 15, tzinfo=ZoneInfo(PARIS))  # 10:15 UTC
    assert window_end(now, dt.timedelta(hours=1)) == utc(2026, 6, 1, 11)


@pytest.mark.parametrize("window", [dt.timedelta(0), dt.timedelta(seconds=-1)])
def test_a_window_must_be_positive(window: dt.timedelta) -> None:
    with pytest.raises(ValueError, match="longer than zero"):
        window_end(utc(2026, 6, 1), window)


@given(now=instants, window=windows)
def test_window_end_is_after_now_by_at_most_one_window(
    now: dt.datetime, window: dt.timedelta
) -> None:
    end = window_end(now, window)
    assert now < end <= now + window


@given(now=instants, window=windows, data=st.data())
def test_everything_in_one_window_shares_its_end(
    now: dt.datetime, window: dt.timedelta, data: st.DataObject
) -> None:
    end = window_end(now, window)
    start = end - window
    assert start <= now
    into = data.draw(st.integers(min_value=0, max_value=window // TICK - 1))
    assert window_end(start + into * TICK, window) == end
    assert window_end(end, window) == end + window


# next_local_hour


@pytest.mark.parametrize(
    ("now", "hour", "timezone", "due"),
    [
        (utc(2026, 6, 1, 6), 9, PARIS, utc(2026, 6, 1, 7)),
        (utc(2026, 6, 1, 7), 9, PARIS, utc(2026, 6, 2, 7)),
        (utc(2026, 6, 1, 6, 59, 59), 9, PARIS, utc(2026, 6, 1, 7)),
        (utc(2026, 1, 15, 6), 9, PARIS, utc(2026, 1, 15, 8)),
        (utc(2026, 6, 1, 6), 9, None, utc(2026, 6, 1, 9)),
        (utc(2026, 6, 1, 23), 0, None, utc(2026, 6, 2)),
        (utc(2026, 6, 1, 12), 9, "Asia/Kolkata", utc(2026, 6, 2, 3, 30)),
        # Paris, 29 March 2026: 02:00 CET becomes 03:00 CEST at 01:00 UTC.
        (utc(2026, 3, 28, 10), 9, PARIS, utc(2026, 3, 29, 7)),
        (utc(2026, 3, 28, 12), 2, PARIS, utc(2026, 3, 29, 1)),
        (utc(2026, 3, 29, 1), 2, PARIS, utc(2026, 3, 30, 0)),
        # Paris, 25 October 2026: 03:00 CEST becomes 02:00 CET at 01:00 UTC.
        (utc(2026, 10, 24, 12), 2, PARIS, utc(2026, 10, 25, 0)),
        (utc(2026, 10, 25, 0, 30), 2, PARIS, utc(2026, 10, 26, 1)),
        (utc(2026, 10, 24, 12), 9, PARIS, utc(2026, 10, 25, 8)),
        # New York, 8 March 2026 (02:00 EST -> 03:00 EDT) and 1 November (02:00 EDT -> 01:00 EST).
        (utc(2026, 3, 7, 12), 2, NEW_YORK, utc(2026, 3, 8, 7)),
        (utc(2026, 3, 7, 20), 9, NEW_YORK, utc(2026, 3, 8, 13)),
        (utc(2026, 10, 31, 20), 1, NEW_YORK, utc(2026, 11, 1, 5)),
        (utc(2026, 11, 1, 5, 30), 1, NEW_YORK, utc(2026, 11, 2, 6)),
        # Santiago, 4 April 2026: at midnight -03 the clock goes back to 23:00 -04.
        (utc(2026, 4, 5, 1), 23, "America/Santiago", utc(2026, 4, 5, 2)),
        # Santiago, 6 September 2026: midnight -04 is skipped to 01:00 -03.
        (utc(2026, 9, 5, 12), 0, "America/Santiago", utc(2026, 9, 6, 4)),
    ],
)
def test_next_local_hour(
    now: dt.datetime, hour: int, timezone: str | None, due: dt.datetime
) -> None:
    assert next_local_hour(now, hour, timezone) == due


@pytest.mark.parametrize("hour", [-1, 24])
def test_an_hour_outside_the_day_is_refused(hour: int) -> None:
    with pytest.raises(ValueError, match="0 to 23"):
        next_local_hour(utc(2026, 6, 1), hour, PARIS)


def test_an_unknown_zone_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        next_local_hour(utc(2026, 6, 1), 9, "Mars/Olympus")


@st.composite
def local_hour_cases(draw: st.DrawFn) -> tuple[dt.datetime, int, str]:
    """An hour in a zone, from an instant anywhere or near one of the zone's clock changes."""
    timezone = draw(st.sampled_from(ZONES))
    now = draw(st.one_of(instants, instants_near_clock_changes(timezone)))
    return now, draw(st.integers(min_value=0, max_value=23)), timezone


@settings(max_examples=500)
@given(local_hour_cases())
def test_next_local_hour_is_that_hour_locally_within_a_long_day(
    case: tuple[dt.datetime, int, str],
) -> None:
    now, hour, timezone = case
    tz = ZoneInfo(timezone)
    due = next_local_hour(now, hour, timezone)
    assert now < due <= now + dt.timedelta(hours=26)
    local = due.astimezone(tz)
    if local.time() == dt.time(hour):
        # The first of two, when the clock shows it twice.
        assert local.fold == 0
    else:
        # Skipped by a gap: due is the jump itself, from before the hour to after it.
        before = (due - TICK).astimezone(tz)
        assert before.utcoffset() != local.utcoffset()
        assert before.replace(tzinfo=None) < dt.datetime.combine(local.date(), dt.time(hour))
        assert local.time() > dt.time(hour)


@settings(max_examples=200)
@given(local_hour_cases())
def test_each_local_day_has_one_digest_time(case: tuple[dt.datetime, int, str]) -> None:
    now, hour, timezone = case
    due = next_local_hour(now, hour, timezone)
    following = next_local_hour(due, hour, timezone)
    tz = ZoneInfo(timezone)
    assert following.astimezone(tz).date() == due.astimezone(tz).date() + dt.timedelta(days=1)
    # Nothing between now and due would have been a digest time either.
    assert next_local_hour(due - TICK, hour, timezone) == due


# due_at


NOW = utc(2026, 6, 1, 10, 15)


@pytest.mark.parametrize(
    ("cadence", "window", "due"),
    [
        (Cadence(CadenceKind.INSTANT), None, None),
        (Cadence(CadenceKind.INSTANT), dt.timedelta(minutes=10), utc(2026, 6, 1, 10, 20)),
        (Cadence(CadenceKind.HOURLY), None, utc(2026, 6, 1, 11)),
        (Cadence(CadenceKind.HOURLY), dt.timedelta(minutes=10), utc(2026, 6, 1, 11)),
        (Cadence(CadenceKind.DAILY, hour=9), None, utc(2026, 6, 2, 7)),
        (Cadence(CadenceKind.DAILY, hour=18), dt.timedelta(minutes=10), utc(2026, 6, 1, 16)),
    ],
)
def test_due_at(cadence: Cadence, window: dt.timedelta | None, due: dt.datetime | None) -> None:
    assert due_at(NOW, cadence, PARIS, window) == due


def test_due_at_daily_with_no_zone_is_utc() -> None:
    assert due_at(NOW, Cadence(CadenceKind.DAILY, hour=9), None) == utc(2026, 6, 2, 9)
