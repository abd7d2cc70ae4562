"""Dedup and throttle with their counters in Redis, planning on PostgreSQL.

They decide as they do on the database; and since Redis writes do not roll back with
the planning transaction, a batch that failed after writing its counters must not be
suppressed by them when it runs again.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis.exceptions
import sqlalchemy as sa
from redis import asyncio as aioredis

from tests.conftest import fresh_database, service_missing
from tests.integration.noise_rig import EMAIL, IN_APP, SCHEMA, Rig, rig, write_catalog
from tidings.kit import ids, tables
from tidings.kit.clock import FrozenClock
from tidings.kit.counters_redis import RedisCounters
from tidings.kit.settings import Settings

REDIS_URL = os.environ.get("TIDINGS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
# Redis expires dedup marks by its own clock (PXAT at the planner's expiry): the frozen
# clock runs a day ahead of the real one, so no mark expires before a test looks.
START = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0) + dt.timedelta(days=1)
# Both stateful rules on one type: one event, one planning job, both counters written.
BOTH = (
    "key: ping.both\ncategory: updates\npriority: normal\ndescription: A ping.\n"
    f"{SCHEMA}rules:\n"
    "  dedup: {key: '{{ data.ref }}', window: 10m}\n"
    "  throttle: {limit: 2, window: 1h, per: channel, over: drop}\n"
    f"channels:{IN_APP}{EMAIL}"
)


@dataclass
class RedisRig:
    noise: Rig
    redis: aioredis.Redis
    prefix: str

    async def marks(self) -> dict[str, str]:
        """Redis key → value of every dedup mark this test wrote."""
        keys = sorted([key async for key in self.redis.scan_iter(match=f"{self.prefix}:dedup:*")])
        values = await self.redis.mget(keys) if keys else []
        return {key: value for key, value in zip(keys, values, strict=True) if value is not None}

    async def hits(self, user: str, channel: str) -> list[str]:
        """The members of a recipient's throttle log on one channel."""
        found: list[str] = await self.redis.zrange(
            f"{self.prefix}:throttle:{user}|{channel}|*", 0, -1
        )
        return found


@pytest.fixture
async def on_redis(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> AsyncIterator[RedisRig]:
    prefix = f"tidings-test-{uuid.uuid4().hex[:12]}"
    client = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        await client.ping()
    except redis.exceptions.RedisError as exc:
        await client.aclose()
        service_missing(f"Redis at {REDIS_URL}", exc)
    try:
        async with fresh_database("postgres", tmp_path) as url:
            folder = write_catalog(tmp_path / "catalog")
            (folder / "ping.both.yaml").write_text(BOTH)
            settings = make_settings(
                database_url=url,
                catalog=folder,
                worker_enabled=False,
                counters_backend="redis",
                redis_url=REDIS_URL,
                redis_prefix=prefix,
            )
            async with rig(settings, FrozenClock(START)) as noise:
                assert isinstance(noise.runtime.pipeline._counters, RedisCounters)
                yield RedisRig(noise, client, prefix)
    finally:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()


def state(delivery: dict[str, Any]) -> tuple[str, str | None]:
    return delivery["state"], delivery["reason"]


async def in_app(noise: Rig, event_id: str, user: str = "u-1") -> tuple[str, str | None]:
    return state((await noise.deliveries(event_id))[(user, "in_app")])


async def sql_rule_rows(noise: Rig) -> int:
    """Dedup marks and throttle hits in the database: none, when Redis keeps them."""
    total = 0
    async with noise.runtime.db.reader() as conn:
        for table in (tables.dedup_marks, tables.throttle_hits):
            total += (
                await conn.execute(sa.select(sa.func.count()).select_from(table))
            ).scalar_one()
    return total


async def test_a_duplicate_inside_the_window_is_deduplicated(on_redis: RedisRig) -> None:
    noise = on_redis.noise
    first = await noise.publish("ping.dedup", ["u-1"], key="e1", ref="r-1")
    await noise.drain()
    await noise.advance(minutes=5)
    second = await noise.publish("ping.dedup", ["u-1"], key="e2", ref="r-1")
    other = await noise.publish("ping.dedup", ["u-1"], key="e3", ref="r-2")
    await noise.drain()

    assert await in_app(noise, first) == ("delivered", None)
    assert state((await noise.deliveries(second))[("u-1", "email")]) == (
        "suppressed",
        "deduplicated",
    )
    assert await in_app(noise, second) == ("suppressed", "deduplicated")
    assert await in_app(noise, other) == ("delivered", None)
    # The marks are in Redis, owned by the notifications that opened them; none in SQL.
    owners = sorted(value.partition("|")[2] for value in (await on_redis.marks()).values())
    assert owners == sorted([ids.derived_id(first, "u-1"), ids.derived_id(other, "u-1")])
    assert await sql_rule_rows(noise) == 0

    # The window counts from the first event: at 11 minutes it is over.
    await noise.advance(minutes=6)
    third = await noise.publish("ping.dedup", ["u-1"], key="e4", ref="r-1")
    await noise.drain()
    assert await in_app(noise, third) == ("delivered", None)


async def test_the_third_ping_in_an_hour_is_throttled(on_redis: RedisRig) -> None:
    noise = on_redis.noise
    sent = []
    for i in range(3):
        sent.append(await noise.publish("ping.throttle", ["u-1"], key=f"t{i}", ref=f"r{i}"))
        await noise.drain()
        await noise.advance(minutes=10)

    assert [await in_app(noise, e) for e in sent] == [("delivered", None)] * 2 + [
        ("suppressed", "throttled")
    ]
    assert sorted(await on_redis.hits("u-1", "in_app")) == sorted(
        f"o:{ids.derived_id(e, 'u-1')}" for e in sent[:2]
    )
    assert await sql_rule_rows(noise) == 0

    # An hour after the first, the window has slid past it.
    await noise.advance(minutes=31)
    later = await noise.publish("ping.throttle", ["u-1"], key="t9", ref="r9")
    await noise.drain()
    assert await in_app(noise, later) == ("delivered", None)


class Boom(RuntimeError):
    """The planning transaction failing after the counters were written."""


def fail_once(monkeypatch: pytest.MonkeyPatch, target: object, name: str) -> list[str]:
    """Make ``target.name`` raise on its first call; returns a log of the failures."""
    original = getattr(target, name)
    failures: list[str] = []

    async def failing(*args: Any, **kwargs: Any) -> Any:
        if not failures:
            failures.append(name)
            raise Boom(f"{name} failed")
        return await original(*args, **kwargs)

    monkeypatch.setattr(target, name, failing)
    return failures


@pytest.mark.parametrize(
    ("step", "leftovers"),
    [
        # After the planning steps, in the job's own transaction: what the counters
        # wrote stays in Redis, and only its owners keep the retry from seeing it.
        ("mark_planned", True),
        # Inside the planning steps: the failed batch forgets what it wrote at once.
        ("store", False),
    ],
)
async def test_a_retry_after_a_failed_transaction_does_not_suppress_itself(
    on_redis: RedisRig, monkeypatch: pytest.MonkeyPatch, step: str, leftovers: bool
) -> None:
    noise = on_redis.noise
    # One ping already went out: the failed batch's hit, were it counted, would make
    # the retry's the third of the hour.
    earlier = await noise.publish("ping.both", ["u-1"], key="b0", ref="r0")
    await noise.drain()
    assert await in_app(noise, earlier) == ("delivered", None)

    target = noise.runtime.events if step == "mark_planned" else noise.runtime.inbox
    failures = fail_once(monkeypatch, target, step)
    await noise.advance(minutes=1)
    retried = await noise.publish("ping.both", ["u-1"], key="b1", ref="r1")
    await noise.drain()

    assert failures == [step]
    assert (await noise.deliveries(retried)) == {}
    owner = ids.derived_id(retried, "u-1")
    left_marks = [v for v in (await on_redis.marks()).values() if v.endswith(f"|{owner}")]
    left_hits = [m for m in await on_redis.hits("u-1", "in_app") if m == f"o:{owner}"]
    assert (len(left_marks), len(left_hits)) == ((1, 1) if leftovers else (0, 0))

    # The retry comes once its backoff has passed.
    await noise.advance(seconds=1)
    assert await in_app(noise, retried) == ("delivered", None)
    assert state((await noise.deliveries(retried))[("u-1", "email")]) == ("sent", None)
    assert sorted(await on_redis.hits("u-1", "in_app")) == sorted(
        [f"o:{ids.derived_id(earlier, 'u-1')}", f"o:{owner}"]
    )

    # What the retry wrote counts for everyone after it.
    await noise.advance(minutes=1)
    again = await noise.publish("ping.both", ["u-1"], key="b2", ref="r1")
    third = await noise.publish("ping.both", ["u-1"], key="b3", ref="r3")
    await noise.drain()
    assert await in_app(noise, again) == ("suppressed", "deduplicated")
    assert await in_app(noise, third) == ("suppressed", "throttled")
