"""Counters in the database: dedup marks and throttle hits written in the planning
transaction, so a batch that rolls back leaves nothing behind."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.kit import ids
from tidings.kit.counters import Hit, Mark, NewHit, NewMark, chunks
from tidings.kit.db import Database
from tidings.kit.tables import dedup_marks, throttle_hits

_SQL_CHUNK = 1000


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
        for chunk in chunks(sorted(set(keys)), _SQL_CHUNK):
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
        for chunk in chunks(wanted, _SQL_CHUNK):
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
        for chunk in chunks(sorted({hit.scope for hit in hits}), _SQL_CHUNK):
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
