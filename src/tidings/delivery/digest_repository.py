"""All SQL for digests: their entries while they wait, the digest a timer closes them
into, and reading digests back for sending."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.kit.db import Database, among
from tidings.kit.tables import digest_entries, digests

DISCARDED = "discarded"  # the digest_id of entries that went stale before their digest


async def add_entries(
    db: Database, conn: AsyncConnection, rows: Sequence[Mapping[str, Any]]
) -> None:
    if rows:
        await conn.execute(db.insert_ignore(digest_entries), list(rows))


async def due_entries(
    conn: AsyncConnection, wanted: Sequence[tuple[str, str]], now: dt.datetime
) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """(user, key) → its entries that are due and in no digest yet, oldest first."""
    pairs = set(wanted)
    users = sorted({user for user, _ in pairs})
    keys = sorted({key for _, key in pairs})
    found: dict[tuple[str, str], list[dict[str, Any]]] = {}
    c = digest_entries.c
    for start in range(0, len(users), 500):
        rows = await conn.execute(
            sa.select(digest_entries)
            .where(
                c.user_id.in_(users[start : start + 500]),
                c.digest_key.in_(keys),
                c.digest_id.is_(None),
                c.due_at <= now,
            )
            .order_by(c.created_at, c.id)
        )
        for row in rows:
            if (row.user_id, row.digest_key) in pairs:
                found.setdefault((row.user_id, row.digest_key), []).append(dict(row._mapping))
    return found


async def close(conn: AsyncConnection, digest: Mapping[str, Any], entry_ids: Sequence[str]) -> None:
    """Write the digest and mark its entries as part of it."""
    await conn.execute(digests.insert().values(**digest))
    await conn.execute(
        digest_entries.update()
        .where(digest_entries.c.id.in_(list(entry_ids)))
        .values(digest_id=digest["id"])
    )


async def discard(conn: AsyncConnection, entry_ids: Sequence[str]) -> None:
    """Take entries out of every digest for good (they went stale waiting)."""
    await conn.execute(
        digest_entries.update()
        .where(digest_entries.c.id.in_(list(entry_ids)))
        .values(digest_id=DISCARDED)
    )


async def discard_events(conn: AsyncConnection, event_ids: Sequence[str]) -> None:
    """Take the entries of these events out of every digest not sent yet (cancelled)."""
    c = digest_entries.c
    await conn.execute(
        digest_entries.update()
        .where(among(conn, c.event_id, event_ids), c.digest_id.is_(None))
        .values(digest_id=DISCARDED)
    )


async def get(conn: AsyncConnection, digest_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    if not digest_ids:
        return {}
    rows = await conn.execute(sa.select(digests).where(digests.c.id.in_(list(digest_ids))))
    return {r.id: dict(r._mapping) for r in rows}
