"""The compiled payload validator (jsonschema-rs) decides exactly as jsonschema does.

Event payloads are first asked of jsonschema-rs; only a payload it fails is explained by
jsonschema. So whatever it passes, jsonschema must pass too, for every schema it is used
for; the schemas whose keywords the two may read differently are left to jsonschema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidings import catalog
from tidings.catalog import payload

SHIPPED = Path(__file__).resolve().parents[3] / "catalog"
SHIPPED_TYPES = list(catalog.load(SHIPPED))
HERE = settings(database=None, deadline=None, max_examples=200)

SCHEMAS: dict[str, dict[str, Any]] = {
    "bounds": {
        "type": "object",
        "required": ["n", "tags"],
        "additionalProperties": False,
        "properties": {
            "n": {"type": "integer", "minimum": -3, "exclusiveMaximum": 7},
            "x": {"type": ["number", "null"], "maximum": 2.5},
            "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
            "kind": {"enum": ["a", 1, True, None]},
            "one": {"const": 1},
            "u": {"type": "string", "format": "uri"},
            "at": {"type": "string", "format": "date-time"},
            "ip": {"type": "string", "format": "ipv4"},
            "pick": {"oneOf": [{"type": "string", "maxLength": 2}, {"type": "integer"}]},
            "same": {"type": "array", "uniqueItems": True},
            "more": {"$ref": "#/$defs/more"},
        },
        "$defs": {
            "more": {"type": "object", "minProperties": 1, "propertyNames": {"maxLength": 2}}
        },
    },
}

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-10, max_value=10)
    | st.floats(min_value=-10, max_value=10)
    | st.sampled_from([1.0, 0, 1, True, "a", "1", "https://x.example/a", "not a uri", "a b:c"])
    | st.sampled_from(["2024-05-01T10:00:00Z", "2024-13-01T10:00:00Z", "10.0.0.1", "10.0.0"])
    | st.text(max_size=4),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=3), children, max_size=4)
    ),
    max_leaves=12,
)
keys = st.sampled_from(["n", "x", "tags", "kind", "one", "u", "at", "ip", "pick", "same", "more"])
payloads = st.dictionaries(keys, json_values, max_size=8)


def explained_only(validator: payload.PayloadValidator, data: Any) -> list[payload.PayloadError]:
    return payload.validate(payload.PayloadValidator(validator.explains), data)


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_a_schema_of_shared_keywords_is_compiled(name: str) -> None:
    assert payload.compile_validator(SCHEMAS[name]).passes is not None


@HERE
@given(data=payloads)
def test_it_passes_exactly_what_jsonschema_passes(data: dict[str, Any]) -> None:
    validator = payload.compile_validator(SCHEMAS["bounds"])
    assert payload.validate(validator, data) == explained_only(validator, data)


@HERE
@given(data=st.dictionaries(st.sampled_from(["board", "comment", "reset_url"]), json_values))
def test_the_shipped_types_decide_as_before(data: dict[str, Any]) -> None:
    for ntype in SHIPPED_TYPES:
        validator = ntype._validator
        assert ntype.validate_payload(data) == explained_only(validator, data)


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "string", "pattern": "^a$"},
        {"type": "object", "patternProperties": {"^x": {"type": "string"}}},
        {"type": "number", "multipleOf": 0.1},
        {"$id": "https://example.com/s", "type": "object"},
        {"type": "object", "unevaluatedProperties": False},
        {"$ref": "https://json-schema.org/draft/2020-12/schema"},
        {"type": "object", "properties": {"a": {"x-unknown": 1}}},
    ],
)
def test_keywords_the_two_may_read_apart_leave_it_to_jsonschema(schema: dict[str, Any]) -> None:
    assert payload.compile_validator(schema).passes is None


def test_a_pattern_is_python_s_regular_expression() -> None:
    # Python's $ matches before a final newline, Rust's does not: jsonschema decides.
    validator = payload.compile_validator({"type": "string", "pattern": "^a$"})
    assert payload.validate(validator, "a\n") == []
