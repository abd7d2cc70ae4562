"""Quiet hours, checked against wall clocks in zones with every kind of clock change.

The property tests search for counterexamples near real clock changes: spring-forward
gaps, fall-back folds, negative DST (Europe/Dublin), half-hour shifts (Australia/Lord_Howe),
odd offsets (America/St_Johns, Pacific/Chatham, Asia/Kolkata) and both hemispheres.
"""

from __future__ import annotations

import datetime as dt
from functools import cache
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidings.planning.rules.quiet_hours import QuietHours, is_quiet, quiet_until, zone

UTC = dt.UTC
MINUTE = dt.timedelta(minutes=1)
TICK = dt.timedelta(microseconds=1)
ZONES = [
    "UTC",
    "Europe/Paris",
    "America/New_York",
    "Australia/Sydney",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
    "America/St_Johns",
    "Pacific/Chatham",
    "Europe/Dublin",
]
PARIS = "Europe/Paris"
NEW_YORK = "America/New_York"


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


def night(start: str, end: str, timezone: str | None = None) -> QuietHours:
    return QuietHours(dt.time.fromisoformat(start), dt.time.fromisoformat(end), timezone)


@cache
def clock_changes(name: str) -> tuple[dt.datetime, ...]:
    """Every instant from 2024 to 2028 at which the zone's offset changes, to the second.

    Found by hourly sampling and bisection here, independently of the code under test.
    """
    tz = ZoneInfo(name)
    changes = []
    at, stop = utc(2024, 1, 1), utc(2028, 1, 1)
    while at < stop:
        after = at + dt.timedelta(hours=1)
        if at.astimezone(tz).utcoffset() != after.astimezone(tz).utcoffset():
            lo, hi = at, after
            while hi - lo > dt.timedelta(seconds=1):
                mid = lo + (hi - lo) / 2
                same = mid.astimezone(tz).utcoffset() == lo.astimezone(tz).utcoffset()
                lo, hi = (mid, hi) if same else (lo, mid)
            changes.append(hi)
        at = after
    return tuple(changes)


wall_times = st.builds(
    dt.time, st.integers(min_value=0, max_value=23), st.integers(min_value=0, max_value=59)
)


@st.composite
def instants_near_clock_changes(draw: st.DrawFn, name: str) -> dt.datetime:
    """An instant within hours or days of a clock change; anywhere in 2024-2027 if none."""
    changes = clock_changes(name)
    if not changes:
        return draw(
            st.datetimes(dt.datetime(2024, 1, 1), dt.datetime(2027, 12, 31), timezones=st.just(UTC))
        )
    change = draw(st.sampled_from(changes))
    seconds = draw(st.integers(-3 * 3_600, 3 * 3_600) | st.integers(-2 * 86_400, 2 * 86_400))
    return change + dt.timedelta(seconds=seconds, microseconds=draw(st.integers(0, 999_999)))


@st.composite
def wall_times_near(draw: st.DrawFn, walls: list[dt.time]) -> dt.time:
    """A wall time on the minute: anywhere, or within 90 minutes of one of ``walls``."""
    if not walls:
        return draw(wall_times)
    wall = draw(st.sampled_from(walls))
    minutes = (wall.hour * 60 + wall.minute + draw(st.integers(-90, 90))) % 1_440
    return draw(wall_times | st.just(dt.time(minutes // 60, minutes % 60)))


@st.composite
def quiet_cases(draw: st.DrawFn) -> tuple[dt.datetime, QuietHours]:
    """A window and an instant, often with the window's edges next to a clock change."""
    name = draw(st.sampled_from(ZONES))
    tz = ZoneInfo(name)
    at = draw(instants_near_clock_changes(name))
    nearest = min(clock_changes(name), key=lambda change: abs(change - at), default=None)
    # The clock's readings just before and at the change: the edges of a gap or a fold.
    walls = (
        []
        if nearest is None
        else [(nearest - TICK).astimezone(tz).time(), nearest.astimezone(tz).time()]
    )
    quiet = QuietHours(draw(wall_times_near(walls)), draw(wall_times_near(walls)), name)
    return at, quiet


# zone


@pytest.mark.parametrize("name", [None, "", "UTC"])
def test_no_zone_means_utc(name: str | None) -> None:
    assert zone(name) == ZoneInfo("UTC")


def test_a_zone_by_its_iana_name() -> None:
    assert zone(PARIS) == ZoneInfo(PARIS)


@pytest.mark.parametrize(
    "name", ["Mars/Olympus", "Europe", "utc", " Europe/Paris", "../etc/passwd", "/etc/localtime"]
)
def test_an_unknown_zone_is_refused_with_an_example(name: str) -> None:
    with pytest.raises(ValueError, match=r"unknown time zone .*such as Europe/Paris"):
        zone(name)


# is_quiet


@pytest.mark.parametrize(
    ("start", "end", "wall", "quiet"),
    [
        ("09:00", "17:00", "08:59", False),
        ("09:00", "17:00", "09:00", True),
        ("09:00", "17:00", "16:59", True),
        ("09:00", "17:00", "17:00", False),
        ("22:00", "07:00", "21:59", False),
        ("22:00", "07:00", "22:00", True),
        ("22:00", "07:00", "00:00", True),
        ("22:00", "07:00", "06:59", True),
        ("22:00", "07:00", "07:00", False),
        ("22:00", "07:00", "12:00", False),
        ("08:00", "08:00", "08:00", False),
        ("08:00", "08:00", "20:00", False),
        ("22:30", "06:45", "22:29", False),
        ("22:30", "06:45", "06:44", True),
    ],
)
def test_quiet_window_in_wall_time(start: str, end: str, wall: str, quiet: bool) -> None:
    at = dt.datetime.combine(dt.date(2026, 6, 1), dt.time.fromisoformat(wall), UTC)
    assert is_quiet(at, night(start, end)) is quiet


def test_wall_time_is_read_in_the_windows_zone_first_then_the_default() -> None:
    at = utc(2026, 6, 1, 21, 30)  # 23:30 in Paris (CEST), 17:30 in New York (EDT)
    assert is_quiet(at, night("22:00", "07:00", PARIS), default_timezone=NEW_YORK)
    assert not is_quiet(at, night("22:00", "07:00"), default_timezone=NEW_YORK)
    assert is_quiet(at, night("22:00", "07:00"), default_timezone=PARIS)
    assert not is_quiet(at, night("22:00", "07:00"))  # 21:30 UTC


def test_any_aware_datetime_is_read_as_the_instant_it_is() -> None:
    at = dt.datetime(2026, 6, 1, 23, 30, tzinfo=ZoneInfo(PARIS))
    assert is_quiet(at, night("22:00", "07:00", PARIS))
    assert not is_quiet(at, night("22:00", "07:00"))  # 21:30 UTC


def test_a_naive_datetime_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        is_quiet(dt.datetime(2026, 6, 1, 23, 30), night("22:00", "07:00"))
    with pytest.raises(ValueError, match="timezone-aware"):
        quiet_until(dt.datetime(2026, 6, 1, 23, 30), night("22:00", "07:00"))


def test_an_unknown_zone_in_quiet_hours_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        quiet_until(utc(2026, 6, 1), night("22:00", "07:00", "Mars/Olympus"))


# quiet_until: ordinary days


@pytest.mark.parametrize(
    ("quiet", "at", "until"),
    [
        (night("22:00", "07:00"), utc(2026, 6, 1, 23), utc(2026, 6, 2, 7)),
        (night("22:00", "07:00"), utc(2026, 6, 2, 3, 15), utc(2026, 6, 2, 7)),
        (night("22:00", "07:00"), utc(2026, 6, 1, 22), utc(2026, 6, 2, 7)),
        (night("12:00", "13:30"), utc(2026, 6, 1, 12, 59, 59), utc(2026, 6, 1, 13, 30)),
        (night("22:00", "07:00", PARIS), utc(2026, 6, 1, 21), utc(2026, 6, 2, 5)),
        (night("22:00", "07:00", NEW_YORK), utc(2026, 1, 10, 4), utc(2026, 1, 10, 12)),
        (night("22:00", "07:00", "Asia/Kolkata"), utc(2026, 1, 10, 17), utc(2026, 1, 11, 1, 30)),
        (night("00:00", "23:59"), utc(2026, 6, 1, 23, 58), utc(2026, 6, 1, 23, 59)),
    ],
)
def test_quiet_until_the_local_end(quiet: QuietHours, at: dt.datetime, until: dt.datetime) -> None:
    assert quiet_until(at, quiet) == until


@pytest.mark.parametrize(
    "at", [utc(2026, 6, 1, 7), utc(2026, 6, 1, 12), utc(2026, 6, 1, 21, 59, 59, 999_999)]
)
def test_not_quiet_means_nothing_to_wait_for(at: dt.datetime) -> None:
    assert quiet_until(at, night("22:00", "07:00")) is None


def test_an_empty_window_is_never_quiet() -> None:
    assert quiet_until(utc(2026, 6, 1, 8), night("08:00", "08:00")) is None


def test_the_answer_is_in_utc_whatever_zone_at_is_in() -> None:
    at = dt.datetime(2026, 6, 1, 23, 30, tzinfo=ZoneInfo(PARIS))
    until = quiet_until(at, night("22:00", "07:00", PARIS))
    assert until == utc(2026, 6, 2, 5)
    assert until is not None
    assert until.tzinfo is UTC


def test_the_default_zone_applies_when_the_window_names_none() -> None:
    until = quiet_until(utc(2026, 6, 1, 21), night("22:00", "07:00"), default_timezone=PARIS)
    assert until == utc(2026, 6, 2, 5)


# quiet_until: clock changes of 2026


def test_paris_spring_forward_skips_the_end_so_the_window_ends_when_the_clock_jumps() -> None:
    # 29 March 2026: 02:00 CET becomes 03:00 CEST at 01:00 UTC; 02:30 never happens.
    quiet = night("22:00", "02:30", PARIS)
    assert quiet_until(utc(2026, 3, 28, 22), quiet) == utc(2026, 3, 29, 1)
    assert quiet_until(utc(2026, 3, 29, 0, 59, 59), quiet) == utc(2026, 3, 29, 1)
    assert quiet_until(utc(2026, 3, 29, 1), quiet) is None  # 03:00 CEST


def test_paris_spring_forward_night_is_an_hour_shorter() -> None:
    # 22:00 CET is 21:00 UTC; 07:00 CEST is 05:00 UTC: eight hours of quiet, not nine.
    assert quiet_until(utc(2026, 3, 28, 21), night("22:00", "07:00", PARIS)) == utc(2026, 3, 29, 5)


def test_paris_spring_forward_swallowing_the_whole_waking_window_waits_a_day() -> None:
    # Awake only 02:30-02:45, which does not exist on 29 March: quiet until the 30th.
    quiet = night("02:45", "02:30", PARIS)
    assert quiet_until(utc(2026, 3, 29, 0, 30), quiet) == utc(2026, 3, 30, 0, 30)


def test_paris_fall_back_ends_at_the_first_of_two_end_times() -> None:
    # 25 October 2026: 03:00 CEST becomes 02:00 CET at 01:00 UTC; 02:30 happens twice.
    quiet = night("22:00", "02:30", PARIS)
    assert quiet_until(utc(2026, 10, 24, 21), quiet) == utc(2026, 10, 25, 0, 30)
    assert quiet_until(utc(2026, 10, 25, 0, 45), quiet) is None  # 02:45 CEST
    # 02:10 CET, the second pass: the first 02:30 is gone, the second is next.
    assert quiet_until(utc(2026, 10, 25, 1, 10), quiet) == utc(2026, 10, 25, 1, 30)


def test_paris_fall_back_night_is_an_hour_longer() -> None:
    # 22:00 CEST is 20:00 UTC; 07:00 CET is 06:00 UTC: ten hours of quiet.
    assert quiet_until(utc(2026, 10, 24, 20), night("22:00", "07:00", PARIS)) == utc(
        2026, 10, 25, 6
    )


def test_paris_fall_back_setting_the_clock_out_of_the_window_ends_it() -> None:
    # Quiet 02:30-03:30; at 02:45 CEST the clock goes back to 02:00 CET, outside it.
    quiet = night("02:30", "03:30", PARIS)
    assert quiet_until(utc(2026, 10, 25, 0, 45), quiet) == utc(2026, 10, 25, 1)
    assert quiet_until(utc(2026, 10, 25, 1, 40), quiet) == utc(2026, 10, 25, 2, 30)


def test_new_york_spring_forward() -> None:
    # 8 March 2026: 02:00 EST becomes 03:00 EDT at 07:00 UTC.
    assert quiet_until(utc(2026, 3, 8, 3), night("21:00", "02:30", NEW_YORK)) == utc(2026, 3, 8, 7)
    assert quiet_until(utc(2026, 3, 8, 3), night("21:00", "08:00", NEW_YORK)) == utc(2026, 3, 8, 12)


def test_new_york_fall_back() -> None:
    # 1 November 2026: 02:00 EDT becomes 01:00 EST at 06:00 UTC; 01:30 happens twice.
    quiet = night("21:00", "01:30", NEW_YORK)
    assert quiet_until(utc(2026, 11, 1, 4), quiet) == utc(2026, 11, 1, 5, 30)
    assert quiet_until(utc(2026, 11, 1, 6, 15), quiet) == utc(2026, 11, 1, 6, 30)
    assert quiet_until(utc(2026, 11, 1, 3), night("23:00", "08:00", NEW_YORK)) == utc(
        2026, 11, 1, 13
    )


# quiet_until: properties


@settings(max_examples=400, deadline=None)
@given(quiet_cases())
def test_deferral_lands_on_the_first_moment_outside_the_window(
    case: tuple[dt.datetime, QuietHours],
) -> None:
    at, quiet = case
    until = quiet_until(at, quiet)
    if until is None:
        assert not is_quiet(at, quiet)
        return
    assert is_quiet(at, quiet)
    assert until >= at
    assert not is_quiet(until, quiet)
    # Quiet all the way there: on a one-minute grid, and the very instant before.
    step = at + MINUTE
    while step < until:
        assert is_quiet(step, quiet), step
        step += MINUTE
    assert is_quiet(until - TICK, quiet)


@settings(max_examples=200, deadline=None)
@given(quiet_cases())
def test_deferral_is_in_utc_and_never_more_than_a_day_and_a_bit_away(
    case: tuple[dt.datetime, QuietHours],
) -> None:
    at, quiet = case
    until = quiet_until(at, quiet)
    if until is not None:
        assert until.tzinfo is UTC
        # A day, plus the longest clock change, plus a day lost to a swallowed window.
        assert until - at <= dt.timedelta(hours=50)


@settings(max_examples=200, deadline=None)
@given(
    at=st.datetimes(dt.datetime(1970, 1, 2), dt.datetime(2037, 12, 31), timezones=st.just(UTC)),
    start=wall_times,
    end=wall_times,
    name=st.timezones().map(str),
)
def test_deferral_in_any_zone_in_any_year(
    at: dt.datetime, start: dt.time, end: dt.time, name: str
) -> None:
    quiet = QuietHours(start, end, name)
    until = quiet_until(at, quiet)
    if until is None:
        assert not is_quiet(at, quiet)
    else:
        assert until >= at
        assert not is_quiet(until, quiet)
        assert until == at or is_quiet(until - TICK, quiet)
