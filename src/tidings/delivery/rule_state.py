"""All SQL for the planner's stateful rules: dedup marks, throttle counts, per-user locks."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.kit import ids
from tidings.kit.db import Database
from tidings.kit.tables import dedup_marks, throttle_hits

_CHUNK = 1000


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


async def live_marks(
    conn: AsyncConnection, keys: Collection[str], now: dt.datetime
) -> dict[str, dt.datetime]:
    """key → first seen, for the dedup marks among ``keys`` whose window is still open."""
    wanted = sorted(set(keys))
    found: dict[str, dt.datetime] = {}
    for start in range(0, len(wanted), _CHUNK):
        rows = await conn.execute(
            sa.select(dedup_marks.c.key, dedup_marks.c.first_seen).where(
                dedup_marks.c.key.in_(wanted[start : start + _CHUNK]),
                dedup_marks.c.expires_at > now,
            )
        )
        found.update((row.key, row.first_seen) for row in rows)
    return found


async def save_marks(
    db: Database,
    conn: AsyncConnection,
    marks: Sequence[tuple[str, str, dt.datetime, dt.datetime]],
    *,
    now: dt.datetime,
) -> None:
    """Write (key, user, first_seen, expires_at) marks, and forget the expired ones."""
    if not marks:
        return
    await conn.execute(dedup_marks.delete().where(dedup_marks.c.expires_at <= now))
    stmt = db.upsert(dedup_marks)
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[dedup_marks.c.key],
            set_={"first_seen": stmt.excluded.first_seen, "expires_at": stmt.excluded.expires_at},
        ),
        [
            {"key": key, "user_id": user, "first_seen": first, "expires_at": expires}
            for key, user, first, expires in marks
        ],
    )


async def recent_hits(
    conn: AsyncConnection, scopes: Collection[str], since: dt.datetime
) -> dict[str, list[dt.datetime]]:
    """scope → the instants a throttle let something through after ``since``."""
    wanted = sorted(set(scopes))
    found: dict[str, list[dt.datetime]] = {scope: [] for scope in wanted}
    for start in range(0, len(wanted), _CHUNK):
        rows = await conn.execute(
            sa.select(throttle_hits.c.scope, throttle_hits.c.at).where(
                throttle_hits.c.scope.in_(wanted[start : start + _CHUNK]),
                throttle_hits.c.at > since,
            )
        )
        for row in rows:
            found[row.scope].append(row.at)
    return found


async def save_hits(
    db: Database,
    conn: AsyncConnection,
    hits: Sequence[tuple[str, dt.datetime]],
    *,
    forget_before: dt.datetime,
) -> None:
    """Record what the throttles let through, and forget hits no window can see any more."""
    if not hits:
        return
    scopes = sorted({scope for scope, _ in hits})
    for start in range(0, len(scopes), _CHUNK):
        await conn.execute(
            throttle_hits.delete().where(
                throttle_hits.c.scope.in_(scopes[start : start + _CHUNK]),
                throttle_hits.c.at < forget_before,
            )
        )
    # A batch that rolls back writes nothing, and a job that runs again after its commit
    # decides nothing again (the planner checks, under the recipients' locks), so fresh
    # ids cannot count a hit twice.
    await conn.execute(
        db.insert_ignore(throttle_hits),
        [{"scope": scope, "delivery_id": ids.new_id(), "at": at} for scope, at in hits],
    )
