"""The actors a collapsed item keeps: newest first, distinct, a bounded few."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.inbox.storing import MAX_GROUP_ACTORS, group_actors

ANN = {"id": "u-ann", "name": "Ann"}
CID = {"id": "u-cid", "name": "Cid"}
GUEST = {"name": "A guest"}


@pytest.mark.parametrize(
    ("given_actors", "kept"),
    [
        ([], []),
        ([None], []),
        ([ANN], [ANN]),
        ([CID, ANN], [CID, ANN]),
        ([ANN, CID, ANN], [ANN, CID]),
        ([{"id": "u-ann", "name": "Ann B."}, ANN], [{"id": "u-ann", "name": "Ann B."}]),
        ([GUEST, GUEST, ANN], [GUEST, GUEST, ANN]),
        ([None, CID, None, CID], [CID]),
    ],
)
def test_kept_actors(given_actors: list[dict[str, Any] | None], kept: list[dict[str, Any]]) -> None:
    assert group_actors(given_actors) == kept


actors = st.one_of(
    st.none(),
    st.builds(lambda n: {"id": f"u-{n}"}, st.integers(0, 15)),
    st.builds(lambda n: {"name": f"guest {n}"}, st.integers(0, 3)),
)


@given(st.lists(actors, max_size=40))
def test_newest_distinct_and_bounded(given_actors: list[dict[str, Any] | None]) -> None:
    kept = group_actors(given_actors)
    ids = [actor["id"] for actor in kept if "id" in actor]
    assert len(ids) == len(set(ids))
    assert len(kept) <= MAX_GROUP_ACTORS
    # The newest first occurrences, in their order, until the limit.
    expected: list[dict[str, Any]] = []
    for actor in given_actors:
        if actor is None or ("id" in actor and actor in expected):
            continue
        expected.append(actor)
    assert kept == expected[:MAX_GROUP_ACTORS]


def test_kept_actors_are_copies() -> None:
    source = [{"id": "u-ann"}]
    group_actors(source)[0]["id"] = "changed"
    assert source == [{"id": "u-ann"}]
