"""Payload schemas: checking them once at load, and validating event data against them."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import jsonschema_rs
import jsonschema_specifications  # type: ignore[import-untyped]
import referencing.exceptions
from jsonschema import Draft202012Validator, FormatChecker, ValidationError
from referencing.jsonschema import DRAFT202012, Schema, SchemaRegistry

if TYPE_CHECKING:
    from referencing._core import Resolver  # not re-exported by referencing, typing only

_DIALECT = "https://json-schema.org/draft/2020-12/schema"
_MESSAGE_MAX = 300
_RFC3339_DATE_TIME = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})"
)
# RFC 3986: a scheme, a colon, then anything but whitespace and control characters.
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:[^\x00-\x20\x7f]*")

PathParts = tuple[str | int, ...]

# The metaschemas, and nothing that could be fetched from the network.
SPECIFICATIONS: SchemaRegistry = jsonschema_specifications.REGISTRY


@dataclass(frozen=True)
class PayloadError:
    """One way event data fails its type's schema; ``path`` is dotted from the event root."""

    path: str
    message: str


# Our own copy, so the checks below do not depend on which optional libraries jsonschema
# happens to find installed, and never leak into other users of the global checker.
_FORMAT_CHECKER = FormatChecker()


@_FORMAT_CHECKER.checks("uri")
def _is_uri(instance: object) -> bool:
    return not isinstance(instance, str) or bool(_URI.fullmatch(instance))


@_FORMAT_CHECKER.checks("date-time", raises=ValueError)
def _is_date_time(instance: object) -> bool:
    if not isinstance(instance, str):
        return True
    if not _RFC3339_DATE_TIME.fullmatch(instance):
        return False
    datetime.fromisoformat(instance.upper().replace("Z", "+00:00"))
    return True


def schema_problems(schema: dict[str, Any]) -> list[tuple[PathParts, str]]:
    """Everything wrong with a payload schema, as (path inside the schema, message)."""
    declared = schema.get("$schema", _DIALECT)
    if not isinstance(declared, str) or declared.rstrip("#") != _DIALECT:
        return [(("$schema",), f"only JSON Schema draft 2020-12 ({_DIALECT}) is supported")]
    meta = Draft202012Validator(Draft202012Validator.META_SCHEMA, registry=SPECIFICATIONS)
    found = [(tuple(error.absolute_path), error.message) for error in meta.iter_errors(schema)]
    if found:
        return sorted(found, key=lambda item: _sort_key(item[0]))
    return list(_unresolvable_refs(schema))


@dataclass(frozen=True)
class PayloadValidator:
    """A payload schema, compiled: ``explains`` finds every problem of event data with
    its path and message (jsonschema); ``passes``, when the schema uses only keywords
    whose meaning the two libraries share, answers "valid?" some fifty times faster
    (jsonschema-rs). Data it passes, jsonschema passes too; data it fails is explained by
    jsonschema, which has the last word."""

    explains: Draft202012Validator
    passes: jsonschema_rs.Draft202012Validator | None = None


def compile_validator(schema: dict[str, Any]) -> PayloadValidator:
    """A validator for a schema that ``schema_problems`` found nothing wrong with."""
    # A registry with no retrieval: a schema can never make us fetch a URL.
    explains = Draft202012Validator(schema, registry=SPECIFICATIONS, format_checker=_FORMAT_CHECKER)
    return PayloadValidator(explains, _fast_validator(schema))


def validate(
    validator: PayloadValidator, data: Any, *, bounded: bool = False
) -> list[PayloadError]:
    """All the ways ``data`` fails the schema, sorted by path; empty when it is valid.

    ``bounded``: ``data`` is known to nest no deeper than ``_FAST_DEPTH``."""
    if (
        validator.passes is not None
        and (bounded or _nests_within(data))
        and _passes(validator.passes, data)
    ):
        return []
    return [
        PayloadError(".".join(["data", *map(str, parts)]), message)
        for parts, message in validation_errors(validator, data)
    ]


def validation_errors(validator: PayloadValidator, data: Any) -> list[tuple[PathParts, str]]:
    """Like ``validate``, with each path as its parts inside ``data``."""
    try:
        found = [
            (_error_path(error), _shorten(error.message))
            for error in validator.explains.iter_errors(data)
        ]
    except RecursionError:
        return [((), "the payload is nested too deeply")]
    except referencing.exceptions.Unresolvable as exc:
        return [((), f"the schema has an unresolvable reference: {exc}")]
    return sorted(found, key=lambda item: (_sort_key(item[0]), item[1]))


# Keywords that jsonschema and jsonschema-rs read alike, by what their values hold. Any
# other keyword (pattern and patternProperties, whose regular expressions are Python's in
# one and Rust's in the other; multipleOf, whose floating point differs; $id, $anchor,
# $dynamicRef, unevaluated*, dependentSchemas, content*, unknown ones) leaves a schema to
# jsonschema alone.
_SUBSCHEMA = frozenset(
    {"not", "if", "then", "else", "items", "contains", "additionalProperties", "propertyNames"}
)
_SUBSCHEMA_LIST = frozenset({"allOf", "anyOf", "oneOf", "prefixItems"})
_SUBSCHEMA_MAP = frozenset({"properties", "$defs", "definitions"})
_PLAIN = frozenset(
    {
        *("type", "enum", "const", "required", "dependentRequired", "format"),
        *("minLength", "maxLength", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"),
        *("minItems", "maxItems", "uniqueItems", "minContains", "maxContains"),
        *("minProperties", "maxProperties"),
        *("title", "description", "default", "examples", "deprecated", "readOnly", "writeOnly"),
        *("$comment", "$schema"),
    }
)


def _shared_keywords_only(schema: Any) -> bool:
    if isinstance(schema, bool):
        return True
    if not isinstance(schema, dict):
        return False
    for name, value in schema.items():
        if name in _PLAIN:
            continue
        if name == "$ref":
            # Only references inside the schema: nothing to look up elsewhere.
            if not isinstance(value, str) or not value.startswith("#"):
                return False
        elif name in _SUBSCHEMA:
            if not _shared_keywords_only(value):
                return False
        elif name in _SUBSCHEMA_LIST:
            if not isinstance(value, list) or not all(map(_shared_keywords_only, value)):
                return False
        elif name in _SUBSCHEMA_MAP:
            if not isinstance(value, dict) or not all(map(_shared_keywords_only, value.values())):
                return False
        else:
            return False
    return True


def _never_retrieve(uri: str) -> Any:
    raise LookupError(f"{uri} is not retrieved: only references inside the schema resolve")


def _conforms(name: str) -> Any:
    def conforms(instance: Any) -> bool:
        return _FORMAT_CHECKER.conforms(instance, name)

    return conforms


def _fast_validator(schema: dict[str, Any]) -> jsonschema_rs.Draft202012Validator | None:
    """The jsonschema-rs validator of ``schema``, or None when jsonschema alone decides."""
    if not _shared_keywords_only(schema):
        return None
    try:
        return jsonschema_rs.Draft202012Validator(
            schema,
            # Every format jsonschema checks is checked by the very same function.
            validate_formats=True,
            formats={name: _conforms(name) for name in _FORMAT_CHECKER.checkers},
            retriever=_never_retrieve,
        )
    except Exception:  # a schema it cannot compile is left to jsonschema
        return None


_FAST_DEPTH = 64
"""How deep data may nest for jsonschema-rs to decide alone: as deep as an API body may
(``json_input.MAX_DEPTH``). Deeper data is left to jsonschema, which refuses what it
cannot descend into (``the payload is nested too deeply``); jsonschema-rs would not."""


def _nests_within(data: Any, limit: int = _FAST_DEPTH) -> bool:
    level: list[Any] = [data]
    for _depth in range(limit):
        deeper: list[Any] = []
        for value in level:
            if isinstance(value, dict):
                deeper.extend(v for v in value.values() if isinstance(v, dict | list))
            elif isinstance(value, list):
                deeper.extend(v for v in value if isinstance(v, dict | list))
        if not deeper:
            return True
        level = deeper
    return False


def _passes(validator: jsonschema_rs.Draft202012Validator, data: Any) -> bool:
    try:
        return bool(validator.is_valid(data))
    except Exception:  # data it cannot take (an integer beyond 64 bits): ask jsonschema
        return False


def json_problems(value: Any, path: PathParts = ()) -> Iterator[tuple[PathParts, str]]:
    """Where ``value`` holds something JSON cannot carry (YAML can: sets, NaN, int keys…)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                yield (*path, str(key)), f"object keys must be strings, not {key!r}"
            else:
                yield from json_problems(item, (*path, key))
    elif isinstance(value, list):
        for position, item in enumerate(value):
            yield from json_problems(item, (*path, position))
    elif isinstance(value, float):
        if not math.isfinite(value):
            yield path, f"{value!r} is not a JSON number"
    elif not isinstance(value, str | int | bool | None):
        yield path, f"a {type(value).__name__} is not a JSON value"


def _unresolvable_refs(schema: dict[str, Any]) -> Iterator[tuple[PathParts, str]]:
    # The same resolution the validator will do, tried up front, so that a reference that
    # cannot be resolved is a catalog problem instead of an error while validating events.
    resolver = SPECIFICATIONS.resolver_with_root(DRAFT202012.create_resource(schema))
    yield from _walk_refs(schema, (), resolver)


def _walk_refs(
    node: Any, path: PathParts, resolver: Resolver[Schema]
) -> Iterator[tuple[PathParts, str]]:
    if isinstance(node, list):
        for position, item in enumerate(node):
            yield from _walk_refs(item, (*path, position), resolver)
        return
    if not isinstance(node, dict):
        return
    if isinstance(node.get("$id"), str):
        resolver = resolver.in_subresource(DRAFT202012.create_resource(node))
    ref = node.get("$ref")
    if isinstance(ref, str):
        try:
            resolver.lookup(ref)
        except referencing.exceptions.Unresolvable:
            yield (*path, "$ref"), f"cannot resolve {ref!r} (only references inside the schema)"
    for name, child in node.items():
        # These hold instance values, not subschemas: a "$ref" inside them is just data.
        if name not in ("enum", "const", "default", "examples"):
            yield from _walk_refs(child, (*path, name), resolver)


def _error_path(error: ValidationError) -> PathParts:
    parts: PathParts = tuple(error.absolute_path)
    required, instance = error.validator_value, error.instance
    if error.validator == "required" and isinstance(required, list) and isinstance(instance, dict):
        # Point at the missing property itself, not at the object that lacks it.
        for name in required:
            if name not in instance and error.message == f"{name!r} is a required property":
                return (*parts, name)
    return parts


def _sort_key(parts: PathParts) -> tuple[tuple[int, int, str], ...]:
    return tuple((0, part, "") if isinstance(part, int) else (1, 0, part) for part in parts)


def _shorten(message: str) -> str:
    return message if len(message) <= _MESSAGE_MAX else message[: _MESSAGE_MAX - 1] + "…"
