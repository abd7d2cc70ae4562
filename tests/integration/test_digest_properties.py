"""Digests lose nothing and repeat nothing, whatever the arrival order and timing.

Hypothesis draws arrival schedules — which digest key, how long after the previous
event, whether the worker runs in between — and the real pipeline plans them on the
real database, timers and all. Each example uses its own recipient, so examples share
one database without seeing each other.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.noise_rig import START, rig, write_catalog
from tidings.kit import tables
from tidings.kit.clock import FrozenClock
from tidings.kit.queue import NewJob
from tidings.kit.settings import Settings

Arrival = tuple[str, int, bool]

arrivals = st.lists(
    st.tuples(st.sampled_from(["roadmap", "infra"]), st.integers(0, 5400), st.booleans()),
    min_size=1,
    max_size=10,
)
_users = itertools.count()


async def _run(settings_: Settings, schedule: list[Arrival], redeliver: bool) -> None:
    user = f"u-{next(_users)}"
    async with rig(settings_, FrozenClock(START)) as r:
        published: list[str] = []
        for n, (board, gap, run_worker) in enumerate(schedule):
            r.clock.advance(gap)
            published.append(
                await r.publish("ping.digest", [user], key=f"{user}-{n}", ref=str(n), board=board)
            )
            if run_worker:
                await r.drain()
        await r.drain()
        await r.advance(days=1)
        if redeliver:
            async with r.runtime.db.transaction() as conn:
                keys = (
                    await conn.execute(
                        sa.select(tables.digest_entries.c.digest_key)
                        .where(tables.digest_entries.c.user_id == user)
                        .distinct()
                    )
                ).scalars()
                await r.runtime.queue.enqueue(
                    conn,
                    [
                        NewJob(id=f"again:{key}", kind="digest", payload={"user": user, "key": key})
                        for key in keys
                    ],
                )
            await r.drain()

        async with r.runtime.db.reader() as conn:
            digests = (
                await conn.execute(
                    sa.select(tables.digests.c["items"]).where(tables.digests.c.user_id == user)
                )
            ).scalars()
            included = Counter(item["event_id"] for items in digests for item in items)
            states = Counter(
                (
                    await conn.execute(
                        sa.select(tables.deliveries.c.state).where(
                            tables.deliveries.c.event_id.in_(published),
                            tables.deliveries.c.notification_id.not_in(
                                sa.select(tables.digests.c.id)
                            ),
                        )
                    )
                ).scalars()
            )
        assert included == Counter(published), "every event in exactly one digest"
        assert states == Counter({"digested": 2 * len(published)})
        digest_count = len({board for board, _, _ in schedule})  # at least one per board
        assert len(await r.inbox(user)) >= digest_count
        assert len(await r.inbox(user)) == len(await r.mail_to(user))


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(schedule=arrivals, redeliver=st.booleans())
def test_a_digest_loses_and_duplicates_nothing_for_any_arrival_order(
    make_settings: Callable[..., Settings],
    database_url: str,
    tmp_path: Path,
    schedule: list[Arrival],
    redeliver: bool,
) -> None:
    catalog = tmp_path / "catalog"
    if not catalog.exists():
        write_catalog(catalog)
    settings_ = make_settings(database_url=database_url, catalog=catalog, worker_enabled=False)
    asyncio.run(_run(settings_, schedule, redeliver))
