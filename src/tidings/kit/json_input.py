"""What Tidings accepts as JSON: UTF-8 text whose every value both engines store alike.

JSON itself allows more than a store keeps: any nesting depth, integers of any size,
``NaN`` and ``Infinity`` (Python's parser takes them), strings holding a lone UTF-16
surrogate or NUL. PostgreSQL refuses some of these, SQLite keeps others differently, and
the serialiser in between gives up on the rest (orjson stops at 255 levels and 64-bit
integers). They are refused here, with the path of the offending value, before any use
case sees them.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from tidings.kit import errors

MAX_DEPTH = 64
"""How deep arrays and objects may nest in a body (the body itself is level 1)."""
SMALLEST_INT = -(2**63)
LARGEST_INT = 2**63 - 1
"""Integers must fit a signed 64-bit integer; larger ones belong in a string."""

_SURROGATE = re.compile("[\ud800-\udfff]")
# What in JSON text may be a value ``check`` refuses, looked for with bytes operations
# (a regular expression over the whole body costs more than the parse it saves): an
# escaped NUL or UTF-16 surrogate (a raw one is not UTF-8), 19 digits in a row (an
# integer that may need more than 64 bits, a number with more than a double holds), an
# exponent of three digits (1e400), NaN and Infinity (which Python's parser takes).
# Text inside strings may look so too: that only costs the full check.
_RISKY_ESCAPE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789E-", b"000000000e+")
_LONG_NUMBER = b"0" * 19
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_INNERMOST = re.compile(rb"\[\]|\{\}")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_UTF32_BOMS = (b"\x00\x00\xfe\xff", b"\xff\xfe\x00\x00")
_UTF16_BOMS = (b"\xfe\xff", b"\xff\xfe")
UTF8_BOM = b"\xef\xbb\xbf"

# A path is built only when a value is refused: each step is (parent, key).
_Path = tuple[Any, str | int] | None


def media_type_problem(content_type: bytes) -> errors.TidingsError | None:
    """The error for a JSON ``Content-Type`` whose ``charset`` is not UTF-8, if any."""
    for parameter in content_type.split(b";")[1:]:
        name, _, value = parameter.partition(b"=")
        if name.strip().lower() != b"charset":
            continue
        charset = value.strip().strip(b"\"'").lower().decode("latin-1")
        if charset not in ("utf-8", "utf8"):
            return _not_utf8(f"its Content-Type says charset={charset}")
    return None


def decode(body: bytes) -> str:
    """The text of a JSON body, which must be UTF-8 (RFC 8259 §8.1); a UTF-8 byte order
    mark is ignored, as the RFC allows.

    Raises:
        errors.UnsupportedMediaType: the body is UTF-16 or UTF-32.
        errors.Invalid: the body is not valid UTF-8, or holds a raw NUL byte.
    """
    if body.startswith(_UTF32_BOMS) or body.startswith(_UTF16_BOMS):
        raise _not_utf8("it starts with a UTF-16 or UTF-32 byte order mark")
    if b"\x00" in body:
        # JSON text starts with two ASCII characters: in UTF-16 and UTF-32 one of the
        # first four bytes is then zero (RFC 4627 §3). UTF-8 JSON never holds a raw NUL.
        if b"\x00" in body[:4]:
            raise _not_utf8("it is UTF-16 or UTF-32")
        raise errors.Invalid(
            "The request's body contains the NUL character (\\u0000), which Tidings "
            "does not store.",
            field="body",
        )
    if body.startswith(UTF8_BOM):
        body = body[len(UTF8_BOM) :]
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        error = errors.Invalid(
            f"The body is not valid UTF-8 (byte {exc.start}: {exc.reason}); send JSON "
            "encoded as UTF-8.",
            field="body",
        )
        error.code = "malformed_json"
        raise error from None


def plainly_storable(body: bytes) -> bool:
    """Whether ``body``, if it is JSON at all, surely passes ``check``: a quick look at
    the bytes, so that a body with nothing in it that ``check`` could refuse is parsed
    once, by the route, instead of twice. False only means "look closer" (``parse``).

    ``body`` is UTF-8 as ``decode`` accepts it, without a byte order mark.
    """
    if b"\\u" in body and _RISKY_ESCAPE.search(body) is not None:
        return False
    if b"NaN" in body or b"Infinity" in body:
        return False
    numbers = body.translate(_DIGITS_AS_ZERO)
    if _LONG_NUMBER in numbers or b"e000" in numbers or b"e+000" in numbers:
        return False
    if body.count(b"[") + body.count(b"{") <= MAX_DEPTH:
        return True
    # Strings removed, only the brackets left: each pass removes the innermost pairs,
    # so the passes needed to empty it are the depth of the deepest value.
    skeleton = _STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    for _level in range(MAX_DEPTH):
        if not skeleton:
            return True
        skeleton = _INNERMOST.sub(b"", skeleton)
    return not skeleton


def parse(text: str) -> Any:
    """The JSON value of ``text``, checked with ``check``; None when ``text`` is not JSON
    at all (the route's own parser says where).

    Raises:
        errors.Invalid: a value that Tidings does not store (see ``check``).
    """
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    except RecursionError:
        raise _too_deep(None) from None
    check(value)
    return value


def check(value: Any, prefix: str = "") -> None:
    """Refuse what a store would keep differently, or not at all: nesting deeper than
    ``MAX_DEPTH``, integers outside 64 bits, non-finite numbers (``NaN``, ``Infinity``,
    ``1e400``), and strings or keys with NUL or a lone surrogate.

    ``prefix`` is the field path of ``value`` itself, for the error.

    Raises:
        errors.Invalid: naming the first offending value's field.
    """
    root: _Path = (None, prefix) if prefix else None
    pending: list[tuple[Any, int, _Path]] = [(value, 1, root)]
    while pending:
        current, depth, path = pending.pop()
        if isinstance(current, str):
            _check_text(current, path)
        elif isinstance(current, dict):
            if depth > MAX_DEPTH:
                raise _too_deep(path)
            for key, item in current.items():
                step = (path, key)
                _check_text(key, step, is_key=True)
                pending.append((item, depth + 1, step))
        elif isinstance(current, list):
            if depth > MAX_DEPTH:
                raise _too_deep(path)
            pending.extend((item, depth + 1, (path, index)) for index, item in enumerate(current))
        elif isinstance(current, bool) or current is None:
            continue
        elif isinstance(current, int):
            if not SMALLEST_INT <= current <= LARGEST_INT:
                raise errors.Invalid(
                    f"'{field_of(path)}' is an integer outside the 64-bit range Tidings "
                    f"stores ({SMALLEST_INT} to {LARGEST_INT}); send it as a string.",
                    field=field_of(path),
                )
        elif isinstance(current, float) and not math.isfinite(current):
            raise errors.Invalid(
                f"'{field_of(path)}' is not a finite number (NaN, Infinity or too large "
                "for a double); JSON has no such numbers.",
                field=field_of(path),
            )


def field_of(path: _Path) -> str:
    """The dotted field name of a path (``events.0.data.text``); ``body`` for the root."""
    parts: list[str] = []
    while path is not None:
        path, step = path
        parts.append(str(step))
    return ".".join(reversed(parts)) or "body"


def _check_text(text: str, path: _Path, *, is_key: bool = False) -> None:
    if "\x00" in text:
        problem = "the NUL character (\\u0000), which Tidings does not store"
    elif not text.isascii() and _SURROGATE.search(text):
        problem = "a lone UTF-16 surrogate (such as \\ud800), which is not a character"
    else:
        return
    # A refused key is not repeated in the answer: the parent names the place.
    field = field_of(path[0] if is_key and path is not None else path)
    what = f"A key of '{field}'" if is_key else f"'{field}'"
    raise errors.Invalid(f"{what} contains {problem}; send valid Unicode text.", field=field)


def _too_deep(path: _Path) -> errors.Invalid:
    field = field_of(path)
    return errors.Invalid(
        f"The body nests arrays and objects more than {MAX_DEPTH} levels deep (at "
        f"'{field}'); flatten it.",
        field=field,
    )


def _not_utf8(why: str) -> errors.UnsupportedMediaType:
    return errors.UnsupportedMediaType(
        f"Tidings accepts JSON encoded as UTF-8 only, and this body is not: {why}. "
        "Send it as UTF-8 with Content-Type: application/json.",
        field="body",
    )
