"""Per-recipient locks for planning.

The rule state itself, dedup marks and throttle hits, lives behind ``kit.counters``.
"""

from __future__ import annotations

from collections.abc import Collection

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.kit.db import Database


async def lock_users(db: Database, conn: AsyncConnection, user_ids: Collection[str]) -> None:
    """Serialise planning per recipient until the transaction ends.

    Dedup, throttle, collapse and digests read a recipient's state, decide, and write it
    back; two PostgreSQL workers planning for one person at once would both read the same
    state. Locks are taken in one order, so two batches cannot deadlock on them. SQLite
    has a single writer and needs none.
    """
    if not db.is_postgres or not user_ids:
        return
    await conn.execute(
        sa.text(
            "SELECT count(pg_advisory_xact_lock(k)) FROM ("
            " SELECT DISTINCT hashtextextended(u, 7411) AS k"
            " FROM unnest(CAST(:users AS text[])) AS u ORDER BY k) AS keys"
        ),
        {"users": sorted(set(user_ids))},
    )
