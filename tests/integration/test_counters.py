"""The counters' contract: SQL on SQLite and PostgreSQL, Redis, and the in-memory twin.

Redis also expires marks by its own clock (PXAT), so the instants here sit a day ahead
of the real time: Redis never drops a mark before a test looks, however long the run,
and the ``now`` given to the counters decides what is live, on every backend.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis.exceptions
from redis import asyncio as aioredis

from tests.conftest import fresh_database, service_missing
from tidings.kit.counters import Counters, Hit, Mark, NewHit, NewMark, undo_on_error
from tidings.kit.counters_memory import InMemoryCounters
from tidings.kit.counters_redis import RedisCounters
from tidings.kit.counters_sql import SqlCounters
from tidings.kit.db import Database

REDIS_URL = os.environ.get("TIDINGS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
T0 = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=1)
MINUTE = dt.timedelta(minutes=1)
HOUR = dt.timedelta(hours=1)
FAR_PAST = T0 - 24 * HOUR


@dataclass
class Subject:
    """One implementation under test, and what it promises beyond the shared contract."""

    counters: Counters
    db: Database | None = None
    keeps_owners: bool = True

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Any]:
        """The planning transaction the counters are handed (none off the database)."""
        if self.db is None:
            yield None
            return
        async with self.db.transaction() as conn:
            yield conn

    def owner(self, owner: str | None) -> str | None:
        """The owner as read back: SQL does not keep owners."""
        return owner if self.keeps_owners else None


@contextlib.asynccontextmanager
async def redis_counters() -> AsyncIterator[RedisCounters]:
    """Counters under a prefix of their own, whose keys are deleted afterwards."""
    prefix = f"tidings-test-{uuid.uuid4().hex[:12]}"
    counters = RedisCounters(REDIS_URL, prefix)
    try:
        await counters.ping()
    except redis.exceptions.RedisError as exc:
        await counters.close()
        service_missing(f"Redis at {REDIS_URL}", exc)
    try:
        yield counters
    finally:
        await counters.close()
        client = aioredis.Redis.from_url(REDIS_URL)
        try:
            keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
            if keys:
                await client.delete(*keys)
        finally:
            await client.aclose()


@pytest.fixture(params=["sqlite", "postgres", "redis", "memory"])
async def subject(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Subject]:
    if request.param == "memory":
        yield Subject(InMemoryCounters())
    elif request.param == "redis":
        async with redis_counters() as counters:
            yield Subject(counters)
    else:
        async with fresh_database(request.param, tmp_path) as url:
            db = Database(url)
            try:
                yield Subject(SqlCounters(db), db, keeps_owners=False)
            finally:
                await db.dispose()


@pytest.fixture
async def on_redis() -> AsyncIterator[RedisCounters]:
    async with redis_counters() as counters:
        yield counters


def mark(key: str, owner: str | None = "n-1", *, at: dt.datetime = T0, life: int = 10) -> NewMark:
    return NewMark(key, f"user-of-{key}", owner, at, at + life * MINUTE)


async def save(
    subject: Subject,
    marks: Sequence[NewMark] = (),
    hits: Sequence[NewHit] = (),
    *,
    now: dt.datetime = T0,
    forget_before: dt.datetime = FAR_PAST,
) -> None:
    async with subject.transaction() as conn:
        await subject.counters.save_marks(conn, marks, now=now)
        await subject.counters.save_hits(conn, hits, forget_before=forget_before)


async def live(subject: Subject, keys: list[str], now: dt.datetime) -> dict[str, Mark]:
    async with subject.transaction() as conn:
        return await subject.counters.live_marks(conn, keys, now)


async def recent(subject: Subject, scopes: list[str], since: dt.datetime) -> dict[str, list[Hit]]:
    async with subject.transaction() as conn:
        found = await subject.counters.recent_hits(conn, scopes, since)
    return {scope: sorted(hits, key=lambda hit: hit.at) for scope, hits in found.items()}


# Dedup marks


async def test_a_mark_is_live_until_it_expires_and_gone_from_then_on(subject: Subject) -> None:
    await save(subject, [mark("k", "n-1")])

    for at in (T0, T0 + 9 * MINUTE + dt.timedelta(seconds=59)):
        assert await live(subject, ["k", "other"], at) == {"k": Mark(T0, subject.owner("n-1"))}
    for at in (T0 + 10 * MINUTE, T0 + HOUR):
        assert await live(subject, ["k", "other"], at) == {}


async def test_a_mark_saved_again_replaces_the_one_before(subject: Subject) -> None:
    await save(subject, [mark("k", "n-1", at=T0 - 20 * MINUTE, life=30)])
    await save(subject, [mark("k", "n-2", at=T0, life=5)])

    assert await live(subject, ["k"], T0 + MINUTE) == {"k": Mark(T0, subject.owner("n-2"))}
    # The new mark's expiry applies, not the old one's.
    assert await live(subject, ["k"], T0 + 6 * MINUTE) == {}


async def test_marks_keep_their_owners_and_their_instants_to_the_microsecond(
    subject: Subject,
) -> None:
    precise = T0 + dt.timedelta(microseconds=123_457)
    await save(subject, [mark("a", "n-a", at=precise), mark("b", None), mark("c", "n|with|bars")])

    assert await live(subject, ["a", "b", "c"], T0 + MINUTE) == {
        "a": Mark(precise, subject.owner("n-a")),
        "b": Mark(T0, None),
        "c": Mark(T0, subject.owner("n|with|bars")),
    }


# Throttle hits


async def test_hits_are_those_after_since_per_scope(subject: Subject) -> None:
    await save(
        subject,
        hits=[
            NewHit("s", "n-1", T0 - 50 * MINUTE),
            NewHit("s", "n-2", T0 - 30 * MINUTE),
            NewHit("s", "n-3", T0 - 20 * MINUTE),
            NewHit("s", None, T0),
            NewHit("t", "n-4", T0 - 5 * MINUTE),
        ],
    )

    # The window is (since, now]: a hit exactly at ``since`` has left it.
    assert await recent(subject, ["s", "t", "empty"], T0 - 30 * MINUTE) == {
        "s": [Hit(T0 - 20 * MINUTE, subject.owner("n-3")), Hit(T0, None)],
        "t": [Hit(T0 - 5 * MINUTE, subject.owner("n-4"))],
        "empty": [],
    }


async def test_ownerless_hits_at_one_instant_all_count(subject: Subject) -> None:
    await save(subject, hits=[NewHit("s", None, T0)] * 3)
    await save(subject, hits=[NewHit("s", None, T0)])

    assert await recent(subject, ["s"], T0 - MINUTE) == {"s": [Hit(T0, None)] * 4}


async def test_saving_hits_forgets_the_old_ones_of_their_scopes(subject: Subject) -> None:
    await save(
        subject,
        hits=[
            NewHit("s", "n-1", T0 - 2 * HOUR),
            NewHit("s", "n-2", T0 - 30 * MINUTE),
            NewHit("t", "n-3", T0 - 2 * HOUR),
        ],
    )
    await save(subject, hits=[NewHit("s", "n-4", T0)], forget_before=T0 - HOUR)

    assert await recent(subject, ["s", "t"], FAR_PAST) == {
        "s": [Hit(T0 - 30 * MINUTE, subject.owner("n-2")), Hit(T0, subject.owner("n-4"))],
        # Only the scopes written are trimmed.
        "t": [Hit(T0 - 2 * HOUR, subject.owner("n-3"))],
    }


# Failures and size


async def test_a_failed_transaction_leaves_nothing_behind(subject: Subject) -> None:
    """SQL rolls back with the transaction; the others forget what the save wrote."""
    await save(subject, [mark("kept", "n-0")], [NewHit("s", "n-0", T0 - MINUTE)])
    marks = [mark("k", "n-1"), mark("kept", "n-1")]
    hits = [NewHit("s", "n-1", T0), NewHit("t", "n-1", T0)]

    async def save_then_fail() -> None:
        async with subject.transaction() as conn:
            await subject.counters.save_marks(conn, marks, now=T0)
            await subject.counters.save_hits(conn, hits, forget_before=FAR_PAST)
            async with undo_on_error(subject.counters, marks, hits):
                raise RuntimeError("the commit failed")

    with pytest.raises(RuntimeError, match="the commit failed"):
        await save_then_fail()

    found = await live(subject, ["k", "kept"], T0 + MINUTE)
    if subject.db is None:
        # The overwritten mark cannot come back: it is gone, not someone else's.
        assert found == {}
    else:
        assert found == {"kept": Mark(T0, None)}
    assert await recent(subject, ["s", "t"], FAR_PAST) == {
        "s": [Hit(T0 - MINUTE, subject.owner("n-0"))],
        "t": [],
    }


async def test_big_batches_go_in_one_call(subject: Subject) -> None:
    count = 5000
    marks = [mark(f"k{i}", f"n-{i}") for i in range(count)]
    hits = [NewHit(f"s{i}", f"n-{i}", T0) for i in range(count)]
    await save(subject, marks, hits)

    found = await live(subject, [m.key for m in marks] + ["missing"], T0 + MINUTE)
    assert found == {m.key: Mark(T0, subject.owner(m.owner)) for m in marks}
    logs = await recent(subject, [h.scope for h in hits], T0 - MINUTE)
    assert logs == {h.scope: [Hit(T0, subject.owner(h.owner))] for h in hits}


# What only the counters that keep owners promise


@pytest.fixture(params=["redis", "memory"])
async def owning(request: pytest.FixtureRequest) -> AsyncIterator[Subject]:
    if request.param == "memory":
        yield Subject(InMemoryCounters())
        return
    async with redis_counters() as counters:
        yield Subject(counters)


async def test_forget_spares_a_mark_another_batch_replaced_since(owning: Subject) -> None:
    mine = mark("k", "n-1")
    await save(owning, [mine], [NewHit("s", "n-1", T0), NewHit("s", None, T0)])
    await save(owning, [mark("k", "n-2", at=T0 + MINUTE)], [NewHit("s", "n-2", T0 + MINUTE)])

    await owning.counters.forget([mine], [NewHit("s", "n-1", T0)])

    assert await live(owning, ["k"], T0 + MINUTE) == {"k": Mark(T0 + MINUTE, "n-2")}
    assert await recent(owning, ["s"], FAR_PAST) == {"s": [Hit(T0, None), Hit(T0 + MINUTE, "n-2")]}


async def test_a_hit_saved_again_under_its_owner_moves(owning: Subject) -> None:
    await save(owning, hits=[NewHit("s", "n-1", T0 - MINUTE)])
    await save(owning, hits=[NewHit("s", "n-1", T0)])

    assert await recent(owning, ["s"], FAR_PAST) == {"s": [Hit(T0, "n-1")]}


# Redis specifics


async def test_redis_keeps_the_documented_keys_and_expiries(on_redis: RedisCounters) -> None:
    first = T0 + dt.timedelta(microseconds=5)
    await on_redis.save_marks(None, [mark("k", "n-1", at=first)], now=T0)
    await on_redis.save_hits(
        None, [NewHit("u|email|*", "n-1", T0 - MINUTE)], forget_before=T0 - HOUR
    )

    client = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        mark_key, hits_key = on_redis.mark_key("k"), on_redis.hits_key("u|email|*")
        assert mark_key.endswith(":dedup:k")
        assert hits_key.endswith(":throttle:u|email|*")
        micros = (first - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1)
        assert await client.get(mark_key) == f"{micros}|n-1"
        assert await client.pexpiretime(mark_key) == (micros + 10 * 60_000_000) // 1000
        assert await client.zrange(hits_key, 0, -1, withscores=True) == [
            ("o:n-1", float(micros - 5 - 60_000_000))
        ]
        # The newest hit leaves the horizon 59 minutes from now: then the scope vanishes.
        ttl = await client.pttl(hits_key)
        assert 0 < ttl <= 59 * 60 * 1000
    finally:
        await client.aclose()


async def test_redis_out_of_reach_raises() -> None:
    counters = RedisCounters("redis://127.0.0.1:1/0", "unreachable")
    try:
        with pytest.raises(redis.exceptions.ConnectionError):
            await counters.live_marks(None, ["k"], T0)
        with pytest.raises(redis.exceptions.ConnectionError):
            await counters.save_hits(None, [NewHit("s", "n-1", T0)], forget_before=FAR_PAST)
    finally:
        await counters.close()
