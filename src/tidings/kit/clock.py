"""Time, injected so rules and tests can control it."""

from __future__ import annotations

import datetime as dt
from typing import Protocol

from tidings.kit import errors


class Clock(Protocol):
    def now(self) -> dt.datetime: ...


class SystemClock:
    """The real clock, always timezone-aware UTC."""

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)


class FrozenClock:
    """A clock that only moves when told to, for tests."""

    def __init__(self, at: dt.datetime) -> None:
        self.at = at

    def now(self) -> dt.datetime:
        return self.at

    def advance(self, seconds: float) -> None:
        self.at += dt.timedelta(seconds=seconds)


def in_utc(at: dt.datetime, field: str) -> dt.datetime:
    """A caller's time in UTC; one without a zone is taken as UTC.

    Raises:
        errors.Invalid: in UTC it falls outside years 1 to 9999 (``0001-01-01T00:00+14:00``),
            which no column can store.
    """
    if at.tzinfo is None:
        return at.replace(tzinfo=dt.UTC)
    try:
        return at.astimezone(dt.UTC)
    except OverflowError:
        raise errors.Invalid(
            f"'{field}' is outside the years 1 to 9999 once taken to UTC.", field=field
        ) from None
