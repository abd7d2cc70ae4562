"""All SQL of operations: the dead letters (jobs the queue gave up on), read, taken and
removed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.kit.tables import dead_letters

_D = dead_letters.c


async def page(
    conn: AsyncConnection, kind: str | None, after: str | None, limit: int
) -> list[dict[str, Any]]:
    """Up to ``limit`` dead letters in id order, after ``after``, of ``kind`` if given."""
    query = sa.select(dead_letters)
    if kind is not None:
        query = query.where(_D.kind == kind)
    if after is not None:
        query = query.where(_D.id > after)
    rows = await conn.execute(query.order_by(_D.id).limit(limit))
    return [dict(r._mapping) for r in rows]


async def one(
    conn: AsyncConnection, dead_letter_id: str, *, lock: bool = False
) -> dict[str, Any] | None:
    """One dead letter; with ``lock``, held until the transaction ends."""
    query = sa.select(dead_letters).where(_D.id == dead_letter_id)
    if lock:
        query = query.with_for_update()
    row = (await conn.execute(query)).first()
    return None if row is None else dict(row._mapping)


async def of_kind(
    conn: AsyncConnection, kind: str, limit: int, *, lock: bool = False
) -> list[dict[str, Any]]:
    """Up to ``limit`` dead letters of ``kind`` in id order; with ``lock``, held until the
    transaction ends and skipping those another transaction holds."""
    query = sa.select(dead_letters).where(_D.kind == kind).order_by(_D.id).limit(limit)
    if lock:
        query = query.with_for_update(skip_locked=True)
    return [dict(r._mapping) for r in await conn.execute(query)]


async def remove(conn: AsyncConnection, dead_letter_ids: Sequence[str]) -> int:
    """Delete dead letters; how many there were."""
    result = await conn.execute(dead_letters.delete().where(_D.id.in_(list(dead_letter_ids))))
    return int(result.rowcount or 0)


async def count_by_kind(conn: AsyncConnection) -> dict[str, int]:
    """How many dead letters wait, per kind."""
    rows = await conn.execute(sa.select(_D.kind, sa.func.count()).group_by(_D.kind))
    return {kind: int(n) for kind, n in rows}
