"""Counters in Redis, shared by every worker: a write is not rolled back with the
planning transaction, so every mark and hit carries its owner (see ``counters``)."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Collection, Sequence

from redis import asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.kit.counters import (
    Hit,
    Mark,
    NewHit,
    NewMark,
    chunks,
    instant,
    mark_value,
    member,
    micros,
    owner_of,
)

# Keys per Redis round trip: a call of any size takes a few round trips, never one per key.
_REDIS_CHUNK = 2000


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
        now_us = micros(now)
        for chunk in chunks(sorted(set(keys)), _REDIS_CHUNK):
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
                found[key] = Mark(instant(int(first_seen)), owner or None)
        return found

    async def save_marks(
        self, conn: AsyncConnection | None, marks: Sequence[NewMark], *, now: dt.datetime
    ) -> None:
        for chunk in chunks(marks, _REDIS_CHUNK):
            async with self._redis.pipeline(transaction=True) as pipe:
                for mark in chunk:
                    pipe.set(
                        self.mark_key(mark.key),
                        mark_value(mark),
                        pxat=micros(mark.expires_at) // 1000,
                    )
                await pipe.execute()

    async def recent_hits(
        self, conn: AsyncConnection | None, scopes: Collection[str], since: dt.datetime
    ) -> dict[str, list[Hit]]:
        wanted = sorted(set(scopes))
        found: dict[str, list[Hit]] = {scope: [] for scope in wanted}
        for chunk in chunks(wanted, _REDIS_CHUNK):
            async with self._redis.pipeline(transaction=False) as pipe:
                for scope in chunk:
                    pipe.zrangebyscore(
                        self.hits_key(scope), f"({micros(since)}", "+inf", withscores=True
                    )
                replies = await pipe.execute()
            for scope, members in zip(chunk, replies, strict=True):
                found[scope] = [
                    Hit(instant(int(score)), owner_of(member)) for member, score in members
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
            by_scope.setdefault(hit.scope, {})[member(hit)] = micros(hit.at)
        forget_before_us = micros(forget_before)
        for chunk in chunks(sorted(by_scope), _REDIS_CHUNK):
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
        for marks_chunk in chunks(marks, _REDIS_CHUNK):
            async with self._redis.pipeline(transaction=False) as pipe:
                for mark in marks_chunk:
                    await self._forget_mark(
                        keys=[self.mark_key(mark.key)], args=[mark_value(mark)], client=pipe
                    )
                await pipe.execute()
        owned = [hit for hit in hits if hit.owner is not None]
        for hits_chunk in chunks(owned, _REDIS_CHUNK):
            async with self._redis.pipeline(transaction=False) as pipe:
                for hit in hits_chunk:
                    pipe.zrem(self.hits_key(hit.scope), member(hit))
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
