from __future__ import annotations

import datetime as dt
import hashlib
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.planning.rules.dedup import DedupBook, dedup_key, is_duplicate

UTC = dt.UTC
HOUR = dt.timedelta(hours=1)
TICK = dt.timedelta(microseconds=1)
T0 = dt.datetime(2026, 6, 1, 12, tzinfo=UTC)

parts = st.tuples(st.text(), st.text(), st.text(), st.text())


# dedup_key


def test_the_key_is_a_stable_sha256_of_length_prefixed_parts() -> None:
    # Marks outlive deployments: the key's recipe must never change.
    expected = hashlib.sha256(b"4:acme5:u-bob15:comment.created3:c-1").hexdigest()
    assert dedup_key("acme", "u-bob", "comment.created", "c-1") == expected
    assert len(expected) == 64


@pytest.mark.parametrize(
    ("one", "other"),
    [
        (("a:b", "c", "t", "k"), ("a", "b:c", "t", "k")),
        (("ab", "", "t", "k"), ("a", "b", "t", "k")),
        (("1:a", "", "", ""), ("", "a", "", "")),
        (("t", "u", "x", ""), ("t", "u", "", "x")),
        (("t", "u", "\ud83d\ude00", "k"), ("t", "u", "\U0001f600", "k")),
    ],
)
def test_parts_cannot_run_into_each_other(
    one: tuple[str, str, str, str], other: tuple[str, str, str, str]
) -> None:
    assert dedup_key(*one) != dedup_key(*other)


@given(parts, parts)
def test_keys_are_equal_exactly_when_the_parts_are(
    one: tuple[str, str, str, str], other: tuple[str, str, str, str]
) -> None:
    assert (dedup_key(*one) == dedup_key(*other)) is (one == other)


@given(parts)
def test_any_text_has_a_key_of_64_hex_digits(four: tuple[str, str, str, str]) -> None:
    key = dedup_key(*four)
    assert len(key) == 64
    assert set(key) <= set("0123456789abcdef")


def test_lone_surrogates_still_get_a_key() -> None:
    assert dedup_key("t", "u", "x", "\ud800") != dedup_key("t", "u", "x", "\udc00")


# is_duplicate


@pytest.mark.parametrize(
    ("first_seen", "now", "duplicate"),
    [
        (None, T0, False),
        (T0, T0, True),
        (T0, T0 + HOUR - TICK, True),
        (T0, T0 + HOUR, False),
        (T0, T0 + 2 * HOUR, False),
        (T0 + dt.timedelta(minutes=5), T0, True),  # another node's clock ran ahead
    ],
)
def test_is_duplicate(first_seen: dt.datetime | None, now: dt.datetime, duplicate: bool) -> None:
    assert is_duplicate(first_seen, now, HOUR) is duplicate


# DedupBook


def test_a_loaded_mark_makes_a_duplicate_and_nothing_is_marked() -> None:
    book = DedupBook({"k": T0})
    assert book.check("k", T0 + dt.timedelta(minutes=30), HOUR)
    assert book.marked() == []


def test_a_new_key_is_marked_with_its_expiry() -> None:
    book = DedupBook({})
    assert not book.check("k", T0, HOUR)
    assert book.check("k", T0 + dt.timedelta(minutes=59), HOUR)
    assert book.marked() == [("k", T0, T0 + HOUR)]


def test_duplicates_do_not_extend_the_window() -> None:
    book = DedupBook({})
    assert not book.check("k", T0, HOUR)
    assert book.check("k", T0 + dt.timedelta(minutes=30), HOUR)
    assert book.check("k", T0 + dt.timedelta(minutes=59), HOUR)
    assert not book.check("k", T0 + HOUR, HOUR)
    assert book.marked() == [("k", T0 + HOUR, T0 + 2 * HOUR)]


def test_an_expired_loaded_mark_is_replaced() -> None:
    book = DedupBook({"k": T0 - 2 * HOUR, "other": T0})
    assert not book.check("k", T0, HOUR)
    assert book.marked() == [("k", T0, T0 + HOUR)]


def test_keys_are_independent_and_marked_in_order() -> None:
    book = DedupBook({})
    assert not book.check("b", T0, HOUR)
    assert not book.check("a", T0 + TICK, 2 * HOUR)
    assert book.marked() == [("b", T0, T0 + HOUR), ("a", T0 + TICK, T0 + TICK + 2 * HOUR)]


# properties


@given(
    window=st.integers(min_value=1, max_value=3_600).map(lambda s: dt.timedelta(seconds=s)),
    gaps=st.lists(st.integers(min_value=0, max_value=5_000), max_size=60),
    loaded=st.none() | st.integers(min_value=-7_200, max_value=0),
)
def test_accepted_arrivals_are_a_window_apart_and_nothing_else_is_dropped(
    window: dt.timedelta, gaps: list[int], loaded: int | None
) -> None:
    first_seen = None if loaded is None else T0 + dt.timedelta(seconds=loaded)
    book = DedupBook({} if first_seen is None else {"k": first_seen})
    accepted: list[dt.datetime] = []
    at = T0
    for gap in gaps:
        at += dt.timedelta(seconds=gap)
        opened = accepted[-1] if accepted else first_seen
        duplicate = book.check("k", at, window)
        # A duplicate exactly when inside the window opened by the last accepted one.
        assert duplicate is (opened is not None and at - opened < window)
        if not duplicate:
            accepted.append(at)
    assert all(b - a >= window for a, b in itertools.pairwise(accepted))
    expected = [("k", accepted[-1], accepted[-1] + window)] if accepted else []
    assert book.marked() == expected
