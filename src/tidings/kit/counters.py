"""Counters for the planner's stateful rules (dedup marks and throttle hits): the
contract, and what its backends share.

``counters_sql.SqlCounters`` keeps them in the database, written in the planning
transaction: a batch that rolls back leaves nothing behind. ``counters_redis.RedisCounters``
keeps them in Redis, shared by every worker, where a write is not rolled back with the
transaction. So every mark and hit carries its owner, the notification that set it: a
batch planned again after a failure drops its own leftovers when it loads, and
``forget`` removes them as soon as the failure is seen. ``counters_memory.InMemoryCounters``
is the twin for tests. ``backends.build_counters`` chooses.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator, Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.kit import ids

log = logging.getLogger(__name__)

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_T = TypeVar("_T")


@dataclass(frozen=True)
class Mark:
    """A live dedup mark: when its window opened, and the notification that opened it."""

    first_seen: dt.datetime
    owner: str | None = None


@dataclass(frozen=True)
class NewMark:
    """A dedup mark to write: it replaces any mark with the same key."""

    key: str
    user_id: str
    owner: str | None
    first_seen: dt.datetime
    expires_at: dt.datetime


@dataclass(frozen=True)
class Hit:
    """A notification a throttle let through: when, and which notification it was."""

    at: dt.datetime
    owner: str | None = None


@dataclass(frozen=True)
class NewHit:
    """A throttle hit to write. An owner has at most one hit per scope: saving another
    moves it (where owners are kept)."""

    scope: str
    owner: str | None
    at: dt.datetime


class Counters(Protocol):
    """Where the planner's dedup marks and throttle hits live.

    ``conn`` is the planning transaction: the database counters write in it, the others
    ignore it. Implementations that do not keep owners read them back as ``None``.
    """

    async def live_marks(
        self, conn: AsyncConnection, keys: Collection[str], now: dt.datetime
    ) -> dict[str, Mark]:
        """key → mark, for the marks among ``keys`` whose expiry is after ``now``."""
        ...

    async def save_marks(
        self, conn: AsyncConnection, marks: Sequence[NewMark], *, now: dt.datetime
    ) -> None:
        """Write marks, each replacing the mark with its key, and forget expired ones."""
        ...

    async def recent_hits(
        self, conn: AsyncConnection, scopes: Collection[str], since: dt.datetime
    ) -> dict[str, list[Hit]]:
        """scope → its hits after ``since``; every scope asked for is in the answer."""
        ...

    async def save_hits(
        self, conn: AsyncConnection, hits: Sequence[NewHit], *, forget_before: dt.datetime
    ) -> None:
        """Record hits, and forget their scopes' hits from before ``forget_before``."""
        ...

    async def forget(self, marks: Sequence[NewMark], hits: Sequence[NewHit]) -> None:
        """Undo a save whose transaction failed: remove these marks where no one replaced
        them since, and these hits where they have an owner. Nothing to do where writes
        roll back with the transaction."""
        ...

    async def checks(self) -> dict[str, str]:
        """Readiness of the engine the counters add to the database, "ok" or why not
        (none when they live in the database)."""
        ...

    async def close(self) -> None: ...


@contextlib.asynccontextmanager
async def undo_on_error(
    counters: Counters, marks: Sequence[NewMark], hits: Sequence[NewHit]
) -> AsyncIterator[None]:
    """Run the block; if it raises, forget these marks and hits, then let the error go on.

    Failing to forget is logged, not raised: the block's error is the one to report, and
    what stays behind is owned, so the batch's retry still sees through it.
    """
    try:
        yield
    except BaseException:
        if marks or hits:
            try:
                await counters.forget(marks, hits)
            except Exception:
                log.warning(
                    "could not forget %d dedup marks and %d throttle hits of a failed batch",
                    len(marks),
                    len(hits),
                    exc_info=True,
                )
        raise


def chunks(items: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def micros(at: dt.datetime) -> int:
    return (at - EPOCH) // dt.timedelta(microseconds=1)


def instant(micros: int) -> dt.datetime:
    return EPOCH + dt.timedelta(microseconds=micros)


def mark_value(mark: NewMark) -> str:
    return f"{micros(mark.first_seen)}|{mark.owner or ''}"


def member(hit: NewHit) -> str:
    # Ownerless hits get a fresh member each, so two at one instant both count.
    return f"o:{hit.owner}" if hit.owner is not None else f"a:{ids.new_id()}"


def owner_of(member: str) -> str | None:
    kind, _, owner = member.partition(":")
    return owner if kind == "o" else None
