"""Compare what a doc shows (JSON with ``...`` or ``…`` where it leaves things out) with
what the server answered.

A bare ellipsis inside an object means "and other keys", inside an array "and more
items"; a string that is or holds an ellipsis (``"..."``, ``"0193…"``) stands for a
value the doc cannot know in advance (an id, a time).
"""

from __future__ import annotations

import json
from typing import Any

ANY = "\u2026any"  # what a bare ellipsis becomes once the text is JSON
_ELLIPSES = ("...", "…")


def loose_json(text: str) -> Any:
    """Parse JSON in which a bare ellipsis may stand for left-out keys or items."""
    out: list[str] = []
    stack: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == '"':
            end = i + 1
            while text[end] != '"':
                end += 2 if text[end] == "\\" else 1
            out.append(text[i : end + 1])
            i = end + 1
            continue
        ellipsis = next((e for e in _ELLIPSES if text.startswith(e, i)), None)
        if ellipsis:
            out.append(f'"{ANY}": null' if stack and stack[-1] == "{" else f'"{ANY}"')
            i += len(ellipsis)
            continue
        if char in "{[":
            stack.append(char)
        elif char in "}]" and stack:
            stack.pop()
        out.append(char)
        i += 1
    return json.loads("".join(out))


def mismatches(expected: Any, actual: Any, *, values: bool, where: str = "$") -> list[str]:
    """Where ``actual`` differs from ``expected``: keys and item counts always, and
    scalars too when ``values`` (else only their JSON type)."""
    if expected == ANY or expected in _ELLIPSES:
        return []
    if isinstance(expected, str) and any(e in expected for e in _ELLIPSES):
        return [] if isinstance(actual, str) else [f"{where}: a string, got {actual!r}"]
    if isinstance(expected, dict):
        return _object_mismatches(expected, actual, values=values, where=where)
    if isinstance(expected, list):
        return _array_mismatches(expected, actual, values=values, where=where)
    if values:
        same = expected == actual and type(expected) is type(actual)
        return [] if same else [f"{where}: {expected!r} in the doc, {actual!r} in fact"]
    if expected is None or actual is None or _kind(expected) == _kind(actual):
        return []
    return [f"{where}: a {_kind(expected)} in the doc, {actual!r} in fact"]


def _object_mismatches(
    expected: dict[str, Any], actual: Any, *, values: bool, where: str
) -> list[str]:
    if not isinstance(actual, dict):
        return [f"{where}: an object in the doc, {actual!r} in fact"]
    found = [f"{where}: {key!r} is missing" for key in expected if key != ANY and key not in actual]
    if ANY not in expected:
        found += [f"{where}: {key!r} is not in the doc" for key in actual if key not in expected]
    for key, value in expected.items():
        if key != ANY and key in actual:
            found += mismatches(value, actual[key], values=values, where=f"{where}.{key}")
    return found


def _array_mismatches(expected: list[Any], actual: Any, *, values: bool, where: str) -> list[str]:
    if not isinstance(actual, list):
        return [f"{where}: an array in the doc, {actual!r} in fact"]
    shown = [item for item in expected if item != ANY]
    if ANY not in expected and len(actual) != len(expected):
        return [f"{where}: {len(expected)} items in the doc, {len(actual)} in fact"]
    if len(actual) < len(shown):
        return [f"{where}: at least {len(shown)} items in the doc, {len(actual)} in fact"]
    found: list[str] = []
    for index, item in enumerate(shown):
        found += mismatches(item, actual[index], values=values, where=f"{where}[{index}]")
    return found


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__
