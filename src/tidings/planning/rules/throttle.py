"""Throttle: at most ``limit`` notifications in any ``window``, per recipient and scope.

A sliding-window log, exact where GCRA or fixed buckets are not: GCRA lets a burst
reach 2N-1 within one window, fixed buckets 2N across a boundary. The log costs one
instant per admitted notification, and there are at most ``limit`` live at a time.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Admission:
    """The verdict on one notification, the log to keep, and when to try again if refused."""

    allowed: bool
    history: tuple[dt.datetime, ...]
    retry_at: dt.datetime | None


def admit(
    history: Sequence[dt.datetime], now: dt.datetime, limit: int, window: dt.timedelta
) -> Admission:
    """Admit a notification at ``now`` if fewer than ``limit`` were admitted in the window.

    ``history`` holds the instants admitted before, in any order, stale ones included.
    The window is (now - window, now]. ``retry_at``, when refused, is the first instant
    at which enough of them have left the window for one more to fit; with no more
    than ``limit`` in history, that is when the oldest leaves.

    Raises:
        ValueError: the limit or the window is not positive.
    """
    if limit < 1:
        raise ValueError(f"a throttle limit must be at least 1, got {limit}")
    if window <= dt.timedelta(0):
        raise ValueError(f"a throttle window must be longer than zero, got {window}")
    kept = sorted(at for at in history if at > now - window)
    if len(kept) < limit:
        kept = sorted([*kept, now])
        return Admission(allowed=True, history=tuple(kept[-limit:]), retry_at=None)
    return Admission(
        allowed=False,
        history=tuple(kept[-limit:]),
        retry_at=kept[len(kept) - limit] + window,
    )


class ThrottleBook:
    """The throttle logs of one planning batch: those loaded, plus what this batch admits."""

    def __init__(self, loaded: Mapping[str, Sequence[dt.datetime]]) -> None:
        """``loaded`` maps each scope to the instants admitted in it, read from storage."""
        # Whole logs, not trimmed to one limit: types sharing a scope may declare different
        # limits and windows, and each needs every instant its own window covers.
        self._logs = {scope: list(instants) for scope, instants in loaded.items()}
        self._admitted: list[tuple[str, dt.datetime, str | None]] = []

    def admit(
        self,
        scope: str,
        now: dt.datetime,
        limit: int,
        window: dt.timedelta,
        *,
        owner: str | None = None,
    ) -> bool:
        """Whether one more notification in ``scope`` fits at ``now``; records it if so.

        ``owner`` names the notification admitted, stored with its hit.
        """
        log = self._logs.setdefault(scope, [])
        if not admit(log, now, limit, window).allowed:
            return False
        log.append(now)
        self._admitted.append((scope, now, owner))
        return True

    def admitted(self) -> list[tuple[str, dt.datetime]]:
        """What this batch admitted, in order, to write back."""
        return [(scope, at) for scope, at, _ in self._admitted]

    def admitted_by(self) -> list[tuple[str, dt.datetime, str | None]]:
        """What this batch admitted, as ``admitted()``, each with its owner last."""
        return list(self._admitted)
