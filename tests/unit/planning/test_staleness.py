from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.planning.rules.staleness import is_stale, stale_at

UTC = dt.UTC
HOUR = dt.timedelta(hours=1)
TICK = dt.timedelta(microseconds=1)
T0 = dt.datetime(2026, 6, 1, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    ("now", "max_age", "stale"),
    [
        (T0, HOUR, False),
        (T0 + HOUR - TICK, HOUR, False),
        (T0 + HOUR, HOUR, False),
        (T0 + HOUR + TICK, HOUR, True),
        (T0 + dt.timedelta(days=365), None, False),
        (T0 - HOUR, HOUR, False),
    ],
)
def test_is_stale(now: dt.datetime, max_age: dt.timedelta | None, stale: bool) -> None:
    assert is_stale(T0, now, max_age) is stale


def test_stale_at() -> None:
    assert stale_at(T0, HOUR) == T0 + HOUR
    assert stale_at(T0, None) is None


instants = st.datetimes(dt.datetime(2000, 1, 1), dt.datetime(2100, 1, 1), timezones=st.just(UTC))


@given(
    created_at=instants,
    now=instants,
    max_age=st.none() | st.timedeltas(min_value=TICK, max_value=dt.timedelta(days=3650)),
)
def test_stale_exactly_after_stale_at(
    created_at: dt.datetime, now: dt.datetime, max_age: dt.timedelta | None
) -> None:
    deadline = stale_at(created_at, max_age)
    assert is_stale(created_at, now, max_age) is (deadline is not None and now > deadline)
    assert is_stale(created_at, now, max_age) is (
        max_age is not None and now - created_at > max_age
    )
