from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.planning.rules.throttle import Admission, ThrottleBook, admit

UTC = dt.UTC
HOUR = dt.timedelta(hours=1)
TICK = dt.timedelta(microseconds=1)
T0 = dt.datetime(2026, 6, 1, 12, tzinfo=UTC)


def minutes(*offsets: int) -> list[dt.datetime]:
    return [T0 + dt.timedelta(minutes=m) for m in offsets]


def in_window(instants: Sequence[dt.datetime], end: dt.datetime, window: dt.timedelta) -> int:
    """How many instants fall in (end - window, end]."""
    return sum(1 for at in instants if end - window < at <= end)


# admit


def test_admits_up_to_the_limit_then_refuses_until_the_oldest_leaves() -> None:
    history: tuple[dt.datetime, ...] = ()
    for at in minutes(0, 10, 20):
        admission = admit(history, at, 3, HOUR)
        assert admission.allowed
        assert admission.retry_at is None
        history = admission.history
    assert history == tuple(minutes(0, 10, 20))
    refused = admit(history, T0 + dt.timedelta(minutes=30), 3, HOUR)
    assert refused == Admission(allowed=False, history=history, retry_at=T0 + HOUR)
    assert not admit(history, T0 + HOUR - TICK, 3, HOUR).allowed
    assert admit(history, T0 + HOUR, 3, HOUR).allowed


def test_the_window_is_open_at_its_start_and_closed_at_now() -> None:
    assert admit([T0 - HOUR], T0, 1, HOUR).allowed
    assert not admit([T0 - HOUR + TICK], T0, 1, HOUR).allowed
    assert not admit([T0], T0, 1, HOUR).allowed


def test_history_in_any_order_with_stale_instants_is_trimmed_to_the_newest() -> None:
    history = minutes(20, -300, 0, -61, 10)
    admission = admit(history, T0 + dt.timedelta(minutes=30), 4, HOUR)
    assert admission.allowed
    assert admission.history == tuple(minutes(0, 10, 20, 30))


def test_the_returned_log_keeps_at_most_limit_entries() -> None:
    admission = admit(minutes(0, 10, 20), T0 + dt.timedelta(minutes=30), 2, HOUR)
    assert not admission.allowed
    assert admission.history == tuple(minutes(10, 20))


def test_retry_waits_until_enough_have_left_when_more_than_the_limit_were_admitted() -> None:
    # A log written under a higher limit: 5 in the hour, now limited to 2.
    history = minutes(0, 5, 10, 15, 20)
    refused = admit(history, T0 + dt.timedelta(minutes=30), 2, HOUR)
    assert refused.retry_at == T0 + dt.timedelta(minutes=75)
    assert not admit(history, T0 + dt.timedelta(minutes=75) - TICK, 2, HOUR).allowed
    assert admit(history, T0 + dt.timedelta(minutes=75), 2, HOUR).allowed


@pytest.mark.parametrize(
    ("limit", "window", "message"),
    [
        (0, HOUR, "limit must be at least 1"),
        (-1, HOUR, "limit must be at least 1"),
        (1, dt.timedelta(0), "window must be longer than zero"),
    ],
)
def test_a_throttle_must_let_something_through(
    limit: int, window: dt.timedelta, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        admit([], T0, limit, window)


# ThrottleBook


def test_the_book_keeps_each_scope_apart_and_lists_what_it_admitted_in_order() -> None:
    book = ThrottleBook({"u1|email|*": minutes(-10), "u2|email|*": []})
    assert not book.admit("u1|email|*", T0, 1, HOUR)
    assert book.admit("u2|email|*", T0, 1, HOUR)
    assert book.admit("u3|email|*", T0 + TICK, 1, HOUR)
    assert not book.admit("u2|email|*", T0 + TICK, 1, HOUR)
    assert book.admit("u1|email|*", T0 + dt.timedelta(minutes=50), 1, HOUR)
    assert book.admitted() == [
        ("u2|email|*", T0),
        ("u3|email|*", T0 + TICK),
        ("u1|email|*", T0 + dt.timedelta(minutes=50)),
    ]


def test_the_book_does_not_share_its_list() -> None:
    book = ThrottleBook({})
    book.admit("s", T0, 1, HOUR)
    book.admitted().clear()
    assert book.admitted() == [("s", T0)]


def test_types_sharing_a_scope_each_get_their_own_limit_and_window() -> None:
    book = ThrottleBook({"s": minutes(-90, -50, -40)})
    # A tight rule (1 per 30 minutes) passes; a loose one (4 per 2 hours) sees all four.
    assert book.admit("s", T0, 1, dt.timedelta(minutes=30))
    assert not book.admit("s", T0 + TICK, 4, 2 * HOUR)
    assert book.admit("s", T0 + TICK, 5, 2 * HOUR)


# properties


@st.composite
def throttle_runs(
    draw: st.DrawFn,
) -> tuple[int, dt.timedelta, list[dt.datetime], list[dt.datetime]]:
    """A limit, a window, a log from before, and a non-decreasing run of requests after it."""
    limit = draw(st.integers(min_value=1, max_value=10))
    window = dt.timedelta(seconds=draw(st.integers(min_value=1, max_value=7_200)))
    span = int(window.total_seconds()) * 3
    before = draw(st.lists(st.integers(min_value=-span, max_value=0), max_size=15))
    gaps = draw(st.lists(st.integers(min_value=0, max_value=span // 4 + 1), max_size=60))
    history = [T0 + dt.timedelta(seconds=s) for s in before]
    requests = []
    at = T0
    for gap in gaps:
        at += dt.timedelta(seconds=gap)
        requests.append(at)
    return limit, window, history, requests


@given(throttle_runs())
def test_never_more_than_limit_in_any_window_and_never_stricter_than_that(
    run: tuple[int, dt.timedelta, list[dt.datetime], list[dt.datetime]],
) -> None:
    limit, window, initial, requests = run
    log: Sequence[dt.datetime] = initial
    admitted: list[dt.datetime] = []
    for at in requests:
        trailing = in_window([*initial, *admitted], at, window)
        admission = admit(log, at, limit, window)
        # Refused exactly when the trailing window is already full.
        assert admission.allowed is (trailing < limit)
        if admission.allowed:
            admitted.append(at)
        log = admission.history
        assert len(log) <= limit
    for end in admitted:
        assert in_window([*initial, *admitted], end, window) <= limit


@given(throttle_runs())
def test_retry_at_is_the_first_instant_another_would_fit(
    run: tuple[int, dt.timedelta, list[dt.datetime], list[dt.datetime]],
) -> None:
    limit, window, log, requests = run
    for at in requests:
        admission = admit(log, at, limit, window)
        if not admission.allowed:
            assert admission.retry_at is not None
            assert admission.retry_at > at
            assert admit(log, admission.retry_at, limit, window).allowed
            assert not admit(log, admission.retry_at - TICK, limit, window).allowed
        log = [*log, at] if admission.allowed else log


@given(throttle_runs())
def test_the_book_decides_as_the_log_does(
    run: tuple[int, dt.timedelta, list[dt.datetime], list[dt.datetime]],
) -> None:
    limit, window, initial, requests = run
    book = ThrottleBook({"s": initial})
    log: Sequence[dt.datetime] = initial
    decided = []
    for at in requests:
        admission = admit(log, at, limit, window)
        log = admission.history
        decided.append(admission.allowed)
        assert book.admit("s", at, limit, window) is admission.allowed
    assert book.admitted() == [("s", at) for at, ok in zip(requests, decided, strict=True) if ok]
