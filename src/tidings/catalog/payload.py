"""Payload schemas: checking them once at load, and validating event data against them."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

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


def compile_validator(schema: dict[str, Any]) -> Draft202012Validator:
    """A validator for a schema that ``schema_problems`` found nothing wrong with."""
    # A registry with no retrieval: a schema can never make us fetch a URL.
    return Draft202012Validator(schema, registry=SPECIFICATIONS, format_checker=_FORMAT_CHECKER)


def validate(validator: Draft202012Validator, data: Any) -> list[PayloadError]:
    """All the ways ``data`` fails the schema, sorted by path; empty when it is valid."""
    return [
        PayloadError(".".join(["data", *map(str, parts)]), message)
        for parts, message in validation_errors(validator, data)
    ]


def validation_errors(validator: Draft202012Validator, data: Any) -> list[tuple[PathParts, str]]:
    """Like ``validate``, with each path as its parts inside ``data``."""
    try:
        found = [
            (_error_path(error), _shorten(error.message)) for error in validator.iter_errors(data)
        ]
    except RecursionError:
        return [((), "the payload is nested too deeply")]
    except referencing.exceptions.Unresolvable as exc:
        return [((), f"the schema has an unresolvable reference: {exc}")]
    return sorted(found, key=lambda item: (_sort_key(item[0]), item[1]))


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
