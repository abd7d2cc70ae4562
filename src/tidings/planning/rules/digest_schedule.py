"""When a digest is due: fixed windows, or daily at a recipient's local hour."""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from tidings.planning.rules import quiet_hours

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_HOUR = dt.timedelta(hours=1)


class CadenceKind(enum.StrEnum):
    INSTANT = "instant"
    HOURLY = "hourly"
    DAILY = "daily"


@dataclass(frozen=True)
class Cadence:
    """How often a recipient wants a category: at once, hourly, or daily at ``hour`` local."""

    kind: CadenceKind = CadenceKind.INSTANT
    hour: int = 9


def window_end(now: dt.datetime, window: dt.timedelta) -> dt.datetime:
    """The end of the fixed window holding ``now``: the next multiple of ``window`` after it.

    Windows are counted from the Unix epoch, so they partition time and every event
    of one window gets the same end, whichever planner sees it.

    Raises:
        ValueError: the window is not positive.
    """
    if window <= dt.timedelta(0):
        raise ValueError(f"a digest window must be longer than zero, got {window}")
    elapsed = now - _EPOCH
    return _EPOCH + (elapsed // window + 1) * window


def next_local_hour(now: dt.datetime, hour: int, timezone: str | None) -> dt.datetime:
    """The first daily ``hour``:00 in ``timezone`` strictly after ``now``, as UTC.

    A day's time is its first ``hour``:00 when the clock shows it twice, and the first
    instant after the gap when the clock skips it; so each local day has exactly one.

    Raises:
        ValueError: the hour is not 0-23, or the time zone is unknown.
    """
    if not 0 <= hour <= 23:
        raise ValueError(f"a digest hour must be 0 to 23, got {hour}")
    tz = quiet_hours.zone(timezone)
    # From the day before: a gap can carry yesterday's time past midnight into today.
    day = now.astimezone(tz).date() - dt.timedelta(days=1)
    while (due := _local_instant(day, dt.time(hour), tz)) <= now:
        day += dt.timedelta(days=1)
    return due


def due_at(
    now: dt.datetime,
    cadence: Cadence,
    timezone: str | None,
    window: dt.timedelta | None = None,
) -> dt.datetime | None:
    """When the digest an item arriving at ``now`` joins is due; None sends it at once.

    An instant cadence still gathers when the type declares a digest ``window``.
    """
    if cadence.kind is CadenceKind.DAILY:
        return next_local_hour(now, cadence.hour, timezone)
    if cadence.kind is CadenceKind.HOURLY:
        return window_end(now, _HOUR)
    return None if window is None else window_end(now, window)


def _local_instant(day: dt.date, wall: dt.time, tz: ZoneInfo) -> dt.datetime:
    """The UTC instant the clock in ``tz`` shows ``wall`` on ``day``, first if twice.

    When the clock skips ``wall``, the instant it jumps over it.
    """
    naive = dt.datetime.combine(day, wall)
    first = naive.replace(tzinfo=tz).astimezone(dt.UTC)
    if first.astimezone(tz).replace(tzinfo=None) == naive:
        return first
    # In a gap, the earlier offset reads the wall late and the later one early; the
    # jump lies between the two readings.
    early = naive.replace(tzinfo=tz, fold=1).astimezone(dt.UTC)
    return quiet_hours.clock_change(early, first, tz)
