"""A key's type patterns, read as one expression, allow exactly what fnmatch allows."""

from __future__ import annotations

import datetime as dt
import fnmatch

from hypothesis import given, settings
from hypothesis import strategies as st

from tidings.auth import keys

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
pieces = st.sampled_from(
    ["comment", "mention", ".", "*", "?", "[a-c]", "[!x]", "_", "a", "\\", "|"]
)
patterns = st.lists(pieces, min_size=1, max_size=5).map("".join)
type_keys = st.lists(
    st.sampled_from(["comment", "mention", ".", "a", "b", "x", "_", "|"]), max_size=6
)


@settings(database=None, deadline=None, max_examples=500)
@given(
    scopes=st.lists(patterns | st.sampled_from(["users:read", "admin"]), max_size=3),
    type_key=type_keys.map("".join),
)
def test_may_publish_is_fnmatch_over_the_type_patterns(scopes: list[str], type_key: str) -> None:
    key = keys.ApiKey("id", "team", "pfx", tuple(scopes), NOW)
    expected = any(fnmatch.fnmatchcase(type_key, p) for p in key.type_patterns)
    assert key.may_publish(type_key) is expected
