"""Page cursors: opaque to callers, and checked strictly when they come back.

A cursor is a caller's input like any other: one that Tidings never handed out is a 422
on the ``cursor`` field, whatever it decodes to (garbage, text that is not UTF-8, a
time without a zone or one that leaves the calendar when moved to UTC), never a 500.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt

from tidings.kit import errors

MAX_LENGTH = 1024
"""No cursor Tidings hands out is longer; a longer one is refused before decoding."""
MAX_ID_LENGTH = 255
"""Ids (users, deliveries, dead letters) are at most this long, and so are id cursors."""


def encode_keyset(at: dt.datetime, row_id: str) -> str:
    """The cursor that continues after the row created at ``at`` with id ``row_id``."""
    raw = f"{at.astimezone(dt.UTC).isoformat()}|{row_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_keyset(cursor: str | None) -> tuple[dt.datetime, str] | None:
    """The (time in UTC, id) a cursor from ``encode_keyset`` continues after; None for
    no cursor.

    Raises:
        errors.Invalid: on ``cursor``, for anything ``encode_keyset`` did not write.
    """
    if not cursor:
        return None
    if len(cursor) > MAX_LENGTH:
        raise _invalid()
    try:
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
        at, row_id = raw.decode("utf-8").split("|", 1)
        when = dt.datetime.fromisoformat(at)
        # A time without a zone is no instant: refused rather than guessed to be UTC.
        if when.tzinfo is None or not _is_id(row_id):
            raise _invalid()
        return when.astimezone(dt.UTC), row_id
    except (ValueError, binascii.Error, OverflowError):
        # Not base64, not UTF-8, no "|", not a time, or a time that leaves the calendar
        # when moved to UTC (0001-01-01T00:00:00+14:00).
        raise _invalid() from None


def after_id(cursor: str | None) -> str | None:
    """The id a cursor that is a row's id continues after; None for no cursor.

    Raises:
        errors.Invalid: on ``cursor``, for what cannot be an id Tidings handed out.
    """
    if not cursor:
        return None
    if not _is_id(cursor):
        raise _invalid()
    return cursor


def _is_id(text: str) -> bool:
    # Ids may hold any character but NUL (a user id is the producer's): only the length
    # tells a handed-out id from a made-up one.
    return 0 < len(text) <= MAX_ID_LENGTH and "\x00" not in text


def _invalid() -> errors.Invalid:
    return errors.Invalid(
        "The cursor is not one this API gave out; pass next_cursor back unchanged.",
        field="cursor",
    )
