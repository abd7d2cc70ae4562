"""Whether a new catalog keeps every producer of the old one working.

A producer publishes against a type's payload schema. A change breaks it when an event
the old schema accepted is refused by the new one, or when a type it publishes is gone
without having been deprecated first. ``compare`` walks both schemas side by side and
names each break with the path of the field and what to do instead::

    comment.created: data.comment.author: new required field (producers do not send it);
        make it optional, or publish a new type and deprecate this one

The walk understands the keywords catalogs use for payloads — ``type``, ``properties``,
``required``, ``additionalProperties``, ``items``, ``enum``, ``const``, the length, size
and range bounds, ``pattern`` and ``format`` — and treats any other change of a
subschema it cannot reason about (a ``oneOf`` rewritten, a ``$ref`` moved) as a break,
to be looked at by a person.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from tidings.catalog.loader import Catalog
from tidings.catalog.notification_type import NotificationType

_NEW_TYPE = "publish a new type and deprecate this one"

_UNDERSTOOD = frozenset(
    {
        "type",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "enum",
        "const",
        "minLength",
        "maxLength",
        "minItems",
        "maxItems",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "pattern",
        "format",
        # Words for people, not for validation.
        "title",
        "description",
        "examples",
        "default",
        "$comment",
        "deprecated",
        "$schema",
    }
)


@dataclass(frozen=True)
class Break:
    """One way the new catalog refuses what a producer of the old one sends; with
    ``caution``, one way it may (a field newly declared on an object that accepted any
    field: a producer already sending it with another shape would be refused)."""

    type_key: str
    path: str
    message: str
    caution: bool = False

    def __str__(self) -> str:
        return f"{self.type_key}: {self.path}: {'caution: ' if self.caution else ''}{self.message}"


class _Caution(str):
    """A message about a change that breaks only producers sending what no schema named."""


def compare(old: Catalog, new: Catalog) -> list[Break]:
    """Every break from ``old`` to ``new``, by type and path; empty when producers of
    ``old`` keep working, and each type whose schema changed has a higher version.
    Cautions (``Break.caution``) are listed too, and do not make a change breaking."""
    found: list[Break] = []
    for before in old:
        after = new.get(before.key)
        if after is None:
            if before.deprecated is None:
                found.append(
                    Break(
                        before.key,
                        "type",
                        "removed without being deprecated first; "
                        "mark it `deprecated` in one release and remove it in a later one",
                    )
                )
            continue
        found.extend(_type_breaks(before, after))
    return found


def _type_breaks(before: NotificationType, after: NotificationType) -> Iterator[Break]:
    key = before.key
    if after.version < before.version:
        yield Break(key, "version", f"went down from {before.version} to {after.version}")
    for path, message in _schema_breaks(before.payload_schema, after.payload_schema, "data"):
        yield Break(key, path, message, caution=isinstance(message, _Caution))
    if _changed(before.payload_schema, after.payload_schema) and after.version <= before.version:
        yield Break(
            key,
            "version",
            f"the payload schema changed but the version stayed {after.version}; "
            f"raise it to {before.version + 1}",
        )


def _schema_breaks(old: Any, new: Any, path: str) -> Iterator[tuple[str, str]]:
    """(path, message) for each way ``new`` refuses a value ``old`` accepted."""
    if old is False or new is True or new == {} or not _changed(old, new):
        return  # nothing was accepted before, or everything is now, or nothing changed
    if new is False:
        yield path, f"is no longer accepted at all ({_NEW_TYPE})"
        return
    if old is True or old == {}:
        yield path, f"accepted anything before; now it must match a schema ({_NEW_TYPE})"
        return
    if not isinstance(old, Mapping) or not isinstance(new, Mapping):
        yield path, f"changed in a way that cannot be checked; {_NEW_TYPE}"
        return
    unknown = (set(old) | set(new)) - _UNDERSTOOD
    if any(old.get(word) != new.get(word) for word in unknown):
        words = ", ".join(sorted(w for w in unknown if old.get(w) != new.get(w)))
        yield path, f"{words} changed, which cannot be checked for compatibility; {_NEW_TYPE}"
    yield from _type_narrowed(old, new, path)
    yield from _values_narrowed(old, new, path)
    yield from _bounds_narrowed(old, new, path)
    yield from _object_breaks(old, new, path)
    if "items" in new:
        yield from _schema_breaks(old.get("items", True), new["items"], f"{path}[]")


def _types(schema: Mapping[str, Any]) -> set[str] | None:
    declared = schema.get("type")
    if declared is None:
        return None
    return {declared} if isinstance(declared, str) else set(declared)


def _type_narrowed(
    old: Mapping[str, Any], new: Mapping[str, Any], path: str
) -> Iterator[tuple[str, str]]:
    before, after = _types(old), _types(new)
    if after is None:
        return
    if before is None:
        yield path, f"accepted any type before; now only {_listed(after)}"
        return
    if "number" in after:
        after = after | {"integer"}
    lost = before - after
    if lost:
        yield path, f"no longer accepts {_listed(lost)} (now {_listed(_types(new) or set())})"


def _values_narrowed(
    old: Mapping[str, Any], new: Mapping[str, Any], path: str
) -> Iterator[tuple[str, str]]:
    allowed_after = _allowed(new)
    if allowed_after is None:
        return
    allowed_before = _allowed(old)
    if allowed_before is None:
        yield path, f"accepted any value before; now only {_shown(allowed_after)}"
        return
    kept = {_value_key(value) for value in allowed_after}
    lost = [value for value in allowed_before if _value_key(value) not in kept]
    if lost:
        yield path, f"no longer accepts {_shown(lost)}"


def _allowed(schema: Mapping[str, Any]) -> list[Any] | None:
    if "const" in schema:
        return [schema["const"]]
    if "enum" in schema:
        return list(schema["enum"])
    return None


_LOWER_BOUNDS = ("minLength", "minItems", "minimum", "exclusiveMinimum")
_UPPER_BOUNDS = ("maxLength", "maxItems", "maximum", "exclusiveMaximum")


def _bounds_narrowed(
    old: Mapping[str, Any], new: Mapping[str, Any], path: str
) -> Iterator[tuple[str, str]]:
    for word in _LOWER_BOUNDS:
        if word in new and (word not in old or new[word] > old[word]):
            was = f"{old[word]}" if word in old else "none"
            yield path, f"{word} raised to {new[word]} (was {was})"
    for word in _UPPER_BOUNDS:
        if word in new and (word not in old or new[word] < old[word]):
            was = f"{old[word]}" if word in old else "none"
            yield path, f"{word} lowered to {new[word]} (was {was})"
    for word in ("pattern", "format"):
        if word in new and new[word] != old.get(word):
            was = repr(old[word]) if word in old else "none"
            yield (
                path,
                f"{word} is now {new[word]!r} (was {was}); values that do not match it are refused",
            )


def _object_breaks(
    old: Mapping[str, Any], new: Mapping[str, Any], path: str
) -> Iterator[tuple[str, str]]:
    before: Mapping[str, Any] = old.get("properties", {})
    after: Mapping[str, Any] = new.get("properties", {})
    required_before = set(old.get("required", ()))
    for name in sorted(set(new.get("required", ())) - required_before):
        yield (
            f"{path}.{name}",
            f"new required field (producers do not send it); make it optional, or {_NEW_TYPE}",
        )
    closed = new.get("additionalProperties", True) is False
    for name in sorted(before):
        if name not in after:
            if closed:
                yield (
                    f"{path}.{name}",
                    f"removed, and events that still send it are refused ({_NEW_TYPE})",
                )
            else:
                yield (
                    f"{path}.{name}",
                    "removed: producers still send it and templates no longer see it; "
                    f"keep it (mark it deprecated in its description), or {_NEW_TYPE}",
                )
            continue
        yield from _schema_breaks(before[name], after[name], f"{path}.{name}")
    # A newly declared field is optional, but what producers could send under its name
    # before (anything, when the object was open) is now checked against its schema.
    extra_before = old.get("additionalProperties", True)
    for name in sorted(set(after) - set(before)):
        for where, message in _schema_breaks(extra_before, after[name], f"{path}.{name}"):
            yield (
                where,
                _Caution(
                    f"newly declared where undeclared fields were accepted: {message}; "
                    "fine unless a producer already sends this field with another shape"
                ),
            )
    # Closing the object to undeclared fields, or narrowing them, is a break too.
    extra_after = new.get("additionalProperties", True)
    if extra_after is not True:
        yield from _schema_breaks(extra_before, extra_after, f"{path}.*")


def _changed(old: Any, new: Any) -> bool:
    """Whether two schemas differ as JSON (where ``true`` is not ``1``, unlike in Python)."""
    return _canonical(old) != _canonical(new)


def _canonical(value: Any) -> bytes:
    return orjson.dumps(_normal(value), option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)


def _normal(value: Any) -> Any:
    """``value`` with every whole float made an int: JSON Schema has one number type,
    and ``maximum: 10`` and ``maximum: 10.0`` say the same."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return {key: _normal(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_normal(item) for item in value]
    return value


def _value_key(value: Any) -> tuple[str, Any]:
    """A JSON value as JSON Schema compares it: ``1`` equals ``1.0`` but not ``true``."""
    if isinstance(value, bool) or value is None:
        return ("literal", value)
    if isinstance(value, int | float):
        return ("number", value)
    if isinstance(value, str):
        return ("string", value)
    return ("json", _canonical(value))


def _listed(types: set[str]) -> str:
    return ", ".join(sorted(types))


def _shown(values: list[Any]) -> str:
    return ", ".join(repr(v) for v in values[:10]) + (" …" if len(values) > 10 else "")
