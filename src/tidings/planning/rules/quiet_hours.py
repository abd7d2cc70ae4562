"""Quiet hours: a recipient's local window in which non-critical email waits."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_DAY = dt.timedelta(days=1)
_HOUR = dt.timedelta(hours=1)
_TICK = dt.timedelta(microseconds=1)


@dataclass(frozen=True)
class QuietHours:
    """From ``start`` to ``end`` local time, every day; wraps midnight when start > end.

    ``timezone`` is an IANA name; None means the recipient's profile timezone (or UTC).
    """

    start: dt.time
    end: dt.time
    timezone: str | None = None


def zone(name: str | None) -> ZoneInfo:
    """The IANA time zone called ``name``; UTC when there is none.

    Raises:
        ValueError: no such zone in the time zone database.
    """
    if not name:
        return ZoneInfo("UTC")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(
            f"unknown time zone {name!r}; expected an IANA name such as Europe/Paris"
        ) from None


def is_quiet(at: dt.datetime, quiet: QuietHours, default_timezone: str | None = None) -> bool:
    """Whether the recipient's local wall time at ``at`` falls inside the quiet window."""
    local = _require_aware(at).astimezone(zone(quiet.timezone or default_timezone))
    return _quiet_wall_time(local.time(), quiet)


def quiet_until(
    at: dt.datetime, quiet: QuietHours, default_timezone: str | None = None
) -> dt.datetime | None:
    """The earliest UTC instant at or after ``at`` that is outside the quiet window.

    That is the local ``end`` on the right day, except across a clock change: an end
    skipped by a spring-forward gap gives the first instant after the gap; an end that
    happens twice gives whichever occurrence comes first at or after ``at``; and a
    fall-back that sets the clock back out of the window gives the instant of the change.
    None when ``at`` is not quiet.
    """
    tz = zone(quiet.timezone or default_timezone)
    cursor = _require_aware(at).astimezone(dt.UTC)
    if not is_quiet(cursor, quiet, default_timezone):
        return None
    while True:
        # Until the offset changes, wall time runs with real time: quiet up to the next end.
        wall = cursor.astimezone(tz).replace(tzinfo=None)
        end = dt.datetime.combine(wall.date(), quiet.end)
        if end <= wall:
            end += _DAY
        candidate = cursor + (end - wall)
        change = first_offset_change(cursor, candidate, tz)
        if change is None:
            return candidate
        if not is_quiet(change, quiet, default_timezone):
            return change
        cursor = change


def first_offset_change(after: dt.datetime, until: dt.datetime, tz: ZoneInfo) -> dt.datetime | None:
    """The first instant in (``after``, ``until``] at which ``tz``'s UTC offset differs.

    Exact to the microsecond, provided the zone changes offset at most once an hour,
    as real zones do: offsets are sampled hourly, then the change is bisected.
    """
    offset = after.astimezone(tz).utcoffset()
    lo = after
    while lo < until:
        hi = min(lo + _HOUR, until)
        if hi.astimezone(tz).utcoffset() != offset:
            return clock_change(lo, hi, tz)
        lo = hi
    return None


def clock_change(lo: dt.datetime, hi: dt.datetime, tz: ZoneInfo) -> dt.datetime:
    """The instant in (``lo``, ``hi``] at which ``tz`` leaves the offset it has at ``lo``.

    ``hi`` must have another offset, and the zone must change offset only once in between.
    """
    offset = lo.astimezone(tz).utcoffset()
    while hi - lo > _TICK:
        mid = lo + (hi - lo) // 2
        if mid.astimezone(tz).utcoffset() == offset:
            lo = mid
        else:
            hi = mid
    return hi


def _quiet_wall_time(wall: dt.time, quiet: QuietHours) -> bool:
    """Whether a local wall time lies in [start, end), wrapping midnight when start > end."""
    if quiet.start < quiet.end:
        return quiet.start <= wall < quiet.end
    if quiet.start > quiet.end:
        return wall >= quiet.start or wall < quiet.end
    return False


def _require_aware(at: dt.datetime) -> dt.datetime:
    """Refuse a naive datetime, which would silently be read in the host's time zone."""
    if at.utcoffset() is None:
        raise ValueError(f"expected a timezone-aware datetime, got {at.isoformat()}")
    return at
