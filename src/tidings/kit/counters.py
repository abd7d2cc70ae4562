"""Counters for the planner's stateful rules: dedup marks and throttle hits.

``SqlCounters`` keeps them in the database, written in the planning transaction: a
batch that rolls back leaves nothing behind. ``RedisCounters`` keeps them in Redis,
shared by every worker, where a write is not rolled back with the transaction. So every
mark and hit carries its owner, the notification that set it: a batch planned again
after a failure drops its own leftovers when it loads, and ``forget`` removes them as
soon as the failure is seen. ``InMemoryCounters`` is the twin for tests.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import math
from collections.abc import AsyncIterator, Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

import sqlalchemy as sa
from redis import asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.kit import ids
from tidings.kit.db import Database
from tidings.kit.settings import Settings
from tidings.kit.tables import dedup_marks, throttle_hits

log = logging.getLogger(__name__)

_SQL_CHUNK = 1000
# Keys per Redis round trip: a call of any size takes a few round trips, never one per key.
_REDIS_CHUNK = 2000
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
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


def build_counters(settings: Settings, db: Database) -> Counters:
    """The counters the settings choose: the database's own, or Redis."""
    if settings.counters_backend == "redis":
        return RedisCounters(settings.redis_url, settings.redis_prefix)
    return SqlCounters(db)


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


class SqlCounters:
    """Counters in the database, written in the caller's transaction.

    A batch that rolls back takes its writes with it, so owners are not kept.
    """

    def __init__(self, db: Database) -> None:
        self._db = db

    async def live_marks(
        self, conn: AsyncConnection, keys: Collection[str], now: dt.datetime
    ) -> dict[str, Mark]:
        found: dict[str, Mark] = {}
        for chunk in _chunks(sorted(set(keys)), _SQL_CHUNK):
            rows = await conn.execute(
                sa.select(dedup_marks.c.key, dedup_marks.c.first_seen).where(
                    dedup_marks.c.key.in_(chunk), dedup_marks.c.expires_at > now
                )
            )
            found.update((row.key, Mark(row.first_seen)) for row in rows)
        return found

    async def save_marks(
        self, conn: AsyncConnection, marks: Sequence[NewMark], *, now: dt.datetime
    ) -> None:
        if not marks:
            return
        await conn.execute(dedup_marks.delete().where(dedup_marks.c.expires_at <= now))
        stmt = self._db.upsert(dedup_marks)
        await conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[dedup_marks.c.key],
                set_={
                    "first_seen": stmt.excluded.first_seen,
                    "expires_at": stmt.excluded.expires_at,
                },
            ),
            [
                {
                    "key": mark.key,
                    "user_id": mark.user_id,
                    "first_seen": mark.first_seen,
                    "expires_at": mark.expires_at,
                }
                for mark in marks
            ],
        )

    async def recent_hits(
        self, conn: AsyncConnection, scopes: Collection[str], since: dt.datetime
    ) -> dict[str, list[Hit]]:
        wanted = sorted(set(scopes))
        found: dict[str, list[Hit]] = {scope: [] for scope in wanted}
        for chunk in _chunks(wanted, _SQL_CHUNK):
            rows = await conn.execute(
                sa.select(throttle_hits.c.scope, throttle_hits.c.at).where(
                    throttle_hits.c.scope.in_(chunk), throttle_hits.c.at > since
                )
            )
            for row in rows:
                found[row.scope].append(Hit(row.at))
        return found

    async def save_hits(
        self, conn: AsyncConnection, hits: Sequence[NewHit], *, forget_before: dt.datetime
    ) -> None:
        if not hits:
            return
        for chunk in _chunks(sorted({hit.scope for hit in hits}), _SQL_CHUNK):
            await conn.execute(
                throttle_hits.delete().where(
                    throttle_hits.c.scope.in_(chunk), throttle_hits.c.at < forget_before
                )
            )
        # A batch that rolls back writes nothing, and a job that runs again after its commit
        # decides nothing again (the planner checks, under the recipients' locks), so fresh
        # ids cannot count a hit twice.
        await conn.execute(
            self._db.insert_ignore(throttle_hits),
            [{"scope": hit.scope, "delivery_id": ids.new_id(), "at": hit.at} for hit in hits],
        )

    async def forget(self, marks: Sequence[NewMark], hits: Sequence[NewHit]) -> None:
        """Nothing to do: the failed transaction rolled the writes back."""

    async def checks(self) -> dict[str, str]:
        return {}

    async def close(self) -> None:
        """Nothing to close: the database belongs to the caller."""


# Delete a mark only while it is still the one saved: another batch may have replaced it.
_FORGET_MARK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class RedisCounters:
    """Counters in Redis (7.0 or later), shared by every worker.

    ``{prefix}:dedup:{key}`` holds ``"<first_seen, epoch µs>|<owner>"`` and expires at
    the mark's ``expires_at`` (PXAT, to the millisecond below), read back with
    PEXPIRETIME so ``now`` decides as it does in SQL. ``{prefix}:throttle:{scope}`` is
    a sorted set of hits scored by their instant in epoch µs, member ``o:<owner>`` (or
    ``a:<fresh id>`` when there is none); every write trims it to ``forget_before``
    and sets it to expire when its newest hit leaves the horizon, so idle scopes vanish.
    Each call takes one round trip per ``_REDIS_CHUNK`` keys, and each write chunk is
    one MULTI block: a key changes whole or not at all. A lost connection raises
    ``redis.exceptions.ConnectionError``.
    """

    def __init__(self, redis_url: str, prefix: str) -> None:
        self._redis = aioredis.Redis.from_url(
            redis_url, decode_responses=True, socket_connect_timeout=5.0, socket_timeout=30.0
        )
        self._prefix = prefix
        self._forget_mark = self._redis.register_script(_FORGET_MARK)

    def mark_key(self, key: str) -> str:
        """The Redis key of a dedup mark."""
        return f"{self._prefix}:dedup:{key}"

    def hits_key(self, scope: str) -> str:
        """The Redis key of a throttle scope's hits."""
        return f"{self._prefix}:throttle:{scope}"

    async def live_marks(
        self, conn: AsyncConnection | None, keys: Collection[str], now: dt.datetime
    ) -> dict[str, Mark]:
        found: dict[str, Mark] = {}
        now_us = _micros(now)
        for chunk in _chunks(sorted(set(keys)), _REDIS_CHUNK):
            async with self._redis.pipeline(transaction=True) as pipe:
                for key in chunk:
                    pipe.get(self.mark_key(key))
                    pipe.pexpiretime(self.mark_key(key))
                replies = await pipe.execute()
            for key, value, expires_ms in zip(chunk, replies[::2], replies[1::2], strict=True):
                # PEXPIRETIME is -1 for a key without expiry (never written so), -2 for none.
                if value is None or expires_ms == -2 or 0 <= expires_ms * 1000 <= now_us:
                    continue
                first_seen, _, owner = value.partition("|")
                found[key] = Mark(_instant(int(first_seen)), owner or None)
        return found

    async def save_marks(
        self, conn: AsyncConnection | None, marks: Sequence[NewMark], *, now: dt.datetime
    ) -> None:
        for chunk in _chunks(marks, _REDIS_CHUNK):
            async with self._redis.pipeline(transaction=True) as pipe:
                for mark in chunk:
                    pipe.set(
                        self.mark_key(mark.key),
                        _mark_value(mark),
                        pxat=_micros(mark.expires_at) // 1000,
                    )
                await pipe.execute()

    async def recent_hits(
        self, conn: AsyncConnection | None, scopes: Collection[str], since: dt.datetime
    ) -> dict[str, list[Hit]]:
        wanted = sorted(set(scopes))
        found: dict[str, list[Hit]] = {scope: [] for scope in wanted}
        for chunk in _chunks(wanted, _REDIS_CHUNK):
            async with self._redis.pipeline(transaction=False) as pipe:
                for scope in chunk:
                    pipe.zrangebyscore(
                        self.hits_key(scope), f"({_micros(since)}", "+inf", withscores=True
                    )
                replies = await pipe.execute()
            for scope, members in zip(chunk, replies, strict=True):
                found[scope] = [
                    Hit(_instant(int(score)), _owner_of(member)) for member, score in members
                ]
        return found

    async def save_hits(
        self,
        conn: AsyncConnection | None,
        hits: Sequence[NewHit],
        *,
        forget_before: dt.datetime,
    ) -> None:
        by_scope: dict[str, dict[str, int]] = {}
        for hit in hits:
            by_scope.setdefault(hit.scope, {})[_member(hit)] = _micros(hit.at)
        forget_before_us = _micros(forget_before)
        for chunk in _chunks(sorted(by_scope), _REDIS_CHUNK):
            async with self._redis.pipeline(transaction=True) as pipe:
                for scope in chunk:
                    key, members = self.hits_key(scope), by_scope[scope]
                    pipe.zadd(key, members)
                    pipe.zremrangebyscore(key, "-inf", f"({forget_before_us}")
                    # The newest hit matters until it is as old as forget_before is now.
                    ttl_ms = math.ceil((max(members.values()) - forget_before_us) / 1000)
                    if ttl_ms > 0:
                        pipe.pexpire(key, ttl_ms)
                    # Otherwise every hit just written was trimmed at once, and a scope
                    # left empty is gone; one with newer hits kept their expiry.
                await pipe.execute()

    async def forget(self, marks: Sequence[NewMark], hits: Sequence[NewHit]) -> None:
        for marks_chunk in _chunks(marks, _REDIS_CHUNK):
            async with self._redis.pipeline(transaction=False) as pipe:
                for mark in marks_chunk:
                    await self._forget_mark(
                        keys=[self.mark_key(mark.key)], args=[_mark_value(mark)], client=pipe
                    )
                await pipe.execute()
        owned = [hit for hit in hits if hit.owner is not None]
        for hits_chunk in _chunks(owned, _REDIS_CHUNK):
            async with self._redis.pipeline(transaction=False) as pipe:
                for hit in hits_chunk:
                    pipe.zrem(self.hits_key(hit.scope), _member(hit))
                await pipe.execute()

    async def ping(self) -> None:
        """Raise unless Redis answers."""
        await self._redis.ping()

    async def checks(self) -> dict[str, str]:
        try:
            await self.ping()
        except Exception as exc:
            return {"redis": f"{type(exc).__name__}: {exc}"[:200]}
        return {"redis": "ok"}

    async def close(self) -> None:
        await self._redis.aclose()


class InMemoryCounters:
    """The counters' twin for unit tests: Redis's behaviour, owners kept, in a dict.

    Writes ignore the connection, so they are not transactional.
    """

    def __init__(self) -> None:
        self.marks: dict[str, NewMark] = {}
        self.hits: dict[str, dict[str, Hit]] = {}

    async def live_marks(
        self, conn: AsyncConnection | None, keys: Collection[str], now: dt.datetime
    ) -> dict[str, Mark]:
        found = {key: self.marks[key] for key in set(keys) if key in self.marks}
        return {
            key: Mark(mark.first_seen, mark.owner)
            for key, mark in found.items()
            if mark.expires_at > now
        }

    async def save_marks(
        self, conn: AsyncConnection | None, marks: Sequence[NewMark], *, now: dt.datetime
    ) -> None:
        if not marks:
            return
        self.marks = {key: mark for key, mark in self.marks.items() if mark.expires_at > now}
        self.marks.update((mark.key, mark) for mark in marks)

    async def recent_hits(
        self, conn: AsyncConnection | None, scopes: Collection[str], since: dt.datetime
    ) -> dict[str, list[Hit]]:
        return {
            scope: sorted(
                (hit for hit in self.hits.get(scope, {}).values() if hit.at > since),
                key=lambda hit: hit.at,
            )
            for scope in set(scopes)
        }

    async def save_hits(
        self,
        conn: AsyncConnection | None,
        hits: Sequence[NewHit],
        *,
        forget_before: dt.datetime,
    ) -> None:
        for hit in hits:
            self.hits.setdefault(hit.scope, {})[_member(hit)] = Hit(hit.at, hit.owner)
        for scope in {hit.scope for hit in hits}:
            kept = {m: h for m, h in self.hits[scope].items() if h.at >= forget_before}
            if kept:
                self.hits[scope] = kept
            else:
                del self.hits[scope]

    async def forget(self, marks: Sequence[NewMark], hits: Sequence[NewHit]) -> None:
        for mark in marks:
            found = self.marks.get(mark.key)
            if found is not None and _mark_value(found) == _mark_value(mark):
                del self.marks[mark.key]
        for hit in hits:
            if hit.owner is not None:
                self.hits.get(hit.scope, {}).pop(_member(hit), None)

    async def checks(self) -> dict[str, str]:
        return {}

    async def close(self) -> None:
        """Nothing to close."""


def _chunks(items: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _micros(at: dt.datetime) -> int:
    return (at - _EPOCH) // dt.timedelta(microseconds=1)


def _instant(micros: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(microseconds=micros)


def _mark_value(mark: NewMark) -> str:
    return f"{_micros(mark.first_seen)}|{mark.owner or ''}"


def _member(hit: NewHit) -> str:
    # Ownerless hits get a fresh member each, so two at one instant both count.
    return f"o:{hit.owner}" if hit.owner is not None else f"a:{ids.new_id()}"


def _owner_of(member: str) -> str | None:
    kind, _, owner = member.partition(":")
    return owner if kind == "o" else None
