"""json_input.plainly_storable: the look at the bytes that lets a body be parsed once.

It may say "look closer" of a body that is fine, never "fine" of a body that ``check``
refuses: the full check is skipped on its word."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidings.kit import errors, json_input

HERE = settings(database=None, deadline=None, max_examples=400)

# Values near every bound check() has: integers around 64 bits, huge and tiny floats,
# text with NUL and surrogates, deep nesting.
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.sampled_from([2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 10**18, 10**19])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["\x00", "a\ud800", "\udfff", "\\u0000", "NaN", "e400", "1e308"])
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=12,
)


def nested(depth: int) -> Any:
    """Arrays and objects nested ``depth`` levels deep (the outermost is level 1)."""
    value: Any = 1
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


def passes_check(value: Any) -> bool:
    try:
        json_input.check(value)
    except errors.Invalid:
        return False
    return True


def as_json(value: Any, *, ascii_only: bool) -> bytes:
    # Python's serialiser writes what check() refuses too (NaN, lone surrogates escaped).
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


@HERE
@given(value=values, ascii_only=st.booleans())
def test_a_body_it_passes_is_one_check_passes(value: Any, ascii_only: bool) -> None:
    try:
        body = as_json(value, ascii_only=ascii_only)
        body.decode("utf-8")
    except (UnicodeError, ValueError):
        return  # not UTF-8: decode() refuses it before this is asked
    if json_input.plainly_storable(body):
        assert passes_check(json.loads(body))


@pytest.mark.parametrize(
    "text",
    [
        '{"a": "\\u0000"}',
        '{"a\\u0000": 1}',
        '{"a": "\\ud800"}',
        '{"a": "\\uDFFF"}',
        '{"a": 9223372036854775808}',
        '{"a": -9223372036854775809}',
        '{"a": 1e400}',
        '{"a": 1E+400}',
        '{"a": -1e-400}',
        '{"a": NaN}',
        '{"a": -Infinity}',
        json.dumps({"a": "1" * 400 + ".5"}),
        json.dumps(nested(65)),
        json.dumps([nested(64)]),
    ],
)
def test_what_check_may_refuse_is_looked_at_closer(text: str) -> None:
    assert not json_input.plainly_storable(text.encode())


@pytest.mark.parametrize(
    "value",
    [
        {"type": "comment.created", "data": {"n": 922337203685477580, "x": -1.5e-30}},
        {"text": "caf\u00e9 \U0001f600 [{brackets}] in text"},
        nested(64),
        {"events": [{"data": nested(30)} for _ in range(40)]},
    ],
)
def test_what_check_passes_is_mostly_passed_at_once(value: Any) -> None:
    body = json.dumps(value, ensure_ascii=False).encode()
    assert passes_check(value)
    assert json_input.plainly_storable(body)


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    deep_looking = {"texts": ["[[[[{{{{" * 20 for _ in range(10)]}
    assert json_input.plainly_storable(json.dumps(deep_looking).encode())
    assert not json_input.plainly_storable(json.dumps([deep_looking, nested(64)]).encode())
