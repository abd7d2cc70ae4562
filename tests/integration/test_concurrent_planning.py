"""Two PostgreSQL workers running the same job at once decide only once.

A job whose lease ran out while it was still running is claimed by a second worker; the
two then run side by side. Here both runs start while the recipient's planning lock is
held elsewhere, so both are past their first reads when it is released — the widest
window there is. SQLite needs no such test: it has one writer at a time.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import fresh_database
from tests.integration import noise_rig
from tests.integration.noise_rig import START, Rig, rig, write_catalog
from tidings.kit import tables
from tidings.kit.clock import FrozenClock
from tidings.kit.queue import Job
from tidings.kit.settings import Settings

DELAYED_GROUP = (
    "rules:\n"
    "  delay: 5m\n"
    "  collapse:\n"
    "    key: '{{ data.board }}'\n"
    "    title: '{{ group.actors[0].name }} +{{ group.others }} ({{ group.count }})'\n"
)


@pytest.fixture
async def noise(
    make_settings: Callable[..., Settings], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Rig]:
    monkeypatch.setitem(noise_rig.TYPES, "ping.held_group", DELAYED_GROUP)
    async with fresh_database("postgres", tmp_path) as url:
        settings = make_settings(
            database_url=url, catalog=write_catalog(tmp_path / "catalog"), worker_enabled=False
        )
        async with rig(settings, FrozenClock(START)) as r:
            yield r


async def twice_at_once(
    r: Rig, handler: Callable[[Sequence[Job]], Awaitable[None]], kind: str
) -> None:
    """Run ``handler`` on the due ``kind`` jobs twice, concurrently, both starting while
    u-1's planning lock is held, then released."""
    jobs = [
        j for j in await r.runtime.queue.claim("w", 10, dt.timedelta(seconds=30)) if j.kind == kind
    ]
    assert jobs
    async with r.runtime.db.engine.connect() as holder:
        await holder.execute(sa.text("SELECT pg_advisory_lock(hashtextextended('u-1', 7411))"))
        runs = [asyncio.create_task(handler(jobs)) for _ in range(2)]
        await asyncio.sleep(0.5)
        await holder.execute(sa.text("SELECT pg_advisory_unlock_all()"))
    await asyncio.gather(*runs)


async def test_a_plan_job_run_twice_at_once_counts_and_merges_once(noise: Rig) -> None:
    await noise.publish("ping.collapse", ["u-1"], key="c1", actor="Ann", board="roadmap")
    await noise.publish("ping.throttle", ["u-1"], key="t1", ref="x")
    await twice_at_once(noise, noise.runtime.pipeline.plan, "plan")

    items = await noise.inbox("u-1")
    assert sorted((i["group"] or {}).get("count", 1) for i in items) == [1, 1]
    async with noise.runtime.db.reader() as conn:
        hits = await conn.execute(sa.select(sa.func.count()).select_from(tables.throttle_hits))
        assert hits.scalar_one() == 2  # in-app and email, once each


async def test_a_held_item_delivered_twice_at_once_merges_once(noise: Rig) -> None:
    await noise.publish("ping.held_group", ["u-1"], key="h1", actor="Ann", board="roadmap")
    await noise.advance(minutes=6)
    await noise.publish("ping.held_group", ["u-1"], key="h2", actor="Bob", board="roadmap")
    await noise.drain()
    noise.clock.at += dt.timedelta(minutes=6)
    await twice_at_once(noise, noise.runtime.pipeline.deliver_in_app, "in_app")

    (item,) = await noise.inbox("u-1")
    assert item["group"]["count"] == 2
    assert item["title"] == "Bob +1 (2)"
