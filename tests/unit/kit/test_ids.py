"""Derived ids are stored, so they must never change from one release to the next."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.kit import ids

NAMESPACE = uuid.UUID("6f1d3c2e-8b1a-4d0e-9a53-7c1f0e2b4a10")


@given(st.lists(st.text(), min_size=1, max_size=4))
def test_a_derived_id_is_the_standard_uuid5_of_its_parts(parts: list[str]) -> None:
    name = "\x1f".join(parts)
    try:
        expected = str(uuid.uuid5(NAMESPACE, name))
    except UnicodeEncodeError:  # a lone surrogate: neither side can hash it
        return
    assert ids.derived_id(*parts) == expected


def test_a_derived_id_is_pinned() -> None:
    assert ids.derived_id("ev-1", "u-bob", "email") == str(
        uuid.uuid5(NAMESPACE, "ev-1\x1fu-bob\x1femail")
    )


@given(st.text(max_size=120), st.text(max_size=120), st.sampled_from([8, 40, 64, 65, 66, 100]))
def test_bounded_keys_fit_and_stay_distinct(a: str, b: str, limit: int) -> None:
    assert len(ids.bounded(a, limit)) <= limit
    assert (ids.bounded(a, limit) == ids.bounded(b, limit)) == (a == b)


@pytest.mark.parametrize("limit", [8, 40, 64, 65, 66, 100])
def test_a_long_key_is_cut_to_its_limit(limit: int) -> None:
    long_key = "k" * 200
    assert len(ids.bounded(long_key, limit)) == limit
    assert ids.bounded(long_key, limit) != ids.bounded(long_key + "x", limit)
