"""All SQL for preferences: one choices document per owner (a user or a tenant)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.kit.db import Database, among
from tidings.kit.tables import preference_sets

CHUNK = 1000


async def get(conn: AsyncConnection, kind: str, owner_id: str) -> dict[str, Any] | None:
    """The owner's choices document, or None when they never chose anything."""
    row = await conn.execute(
        sa.select(preference_sets.c.choices).where(
            preference_sets.c.owner_kind == kind, preference_sets.c.owner_id == owner_id
        )
    )
    choices: dict[str, Any] | None = row.scalar_one_or_none()
    return choices


async def get_many(
    conn: AsyncConnection, kind: str, owner_ids: Collection[str]
) -> dict[str, Mapping[str, Any]]:
    """The documents of those owners who have one, by owner id."""
    wanted = list(set(owner_ids))
    found: dict[str, Mapping[str, Any]] = {}
    for start in range(0, len(wanted), CHUNK):
        rows = await conn.execute(
            sa.select(preference_sets.c.owner_id, preference_sets.c.choices).where(
                preference_sets.c.owner_kind == kind,
                among(conn, preference_sets.c.owner_id, wanted[start : start + CHUNK]),
            )
        )
        found.update((row.owner_id, row.choices) for row in rows)
    return found


async def put(
    db: Database,
    conn: AsyncConnection,
    kind: str,
    owner_id: str,
    choices: Mapping[str, Any],
    now: dt.datetime,
) -> None:
    """Replace the owner's whole document."""
    stmt = db.upsert(preference_sets).values(
        owner_kind=kind, owner_id=owner_id, choices=dict(choices), updated_at=now
    )
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[preference_sets.c.owner_kind, preference_sets.c.owner_id],
            set_={"choices": stmt.excluded.choices, "updated_at": stmt.excluded.updated_at},
        )
    )


async def lock(
    db: Database, conn: AsyncConnection, kind: str, owner_id: str, now: dt.datetime
) -> dict[str, Any]:
    """The owner's document, locked until the transaction ends (created empty if need be).

    The row is created first so that there is a row to lock: two writers that both find
    none would otherwise both go ahead, and the later would undo the earlier.
    """
    await conn.execute(
        db.insert_ignore(preference_sets).values(
            owner_kind=kind, owner_id=owner_id, choices={}, updated_at=now
        )
    )
    row = await conn.execute(
        sa.select(preference_sets.c.choices)
        .where(preference_sets.c.owner_kind == kind, preference_sets.c.owner_id == owner_id)
        .with_for_update()
    )
    choices: dict[str, Any] = row.scalar_one()
    return choices
