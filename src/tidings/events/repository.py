"""All SQL for events and idempotency keys."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.kit.db import among
from tidings.kit.tables import events, idempotency_keys

# One statement text per engine whatever the number of keys: an index probe per key
# (``key = ANY(array)`` on PostgreSQL, ``key IN (SELECT value FROM json_each(?))`` on
# SQLite), prepared once and never built again by SQLAlchemy: a group commit asks it
# for every group.
_EXISTING_KEYS = {
    "postgresql": "SELECT key, body_hash, event_id FROM idempotency_keys "
    "WHERE tenant = $1 AND namespace = $2 AND key = ANY($3::varchar[])",
    "sqlite": "SELECT key, body_hash, event_id FROM idempotency_keys "
    "WHERE tenant = ? AND namespace = ? AND key IN (SELECT value FROM json_each(?))",
}


async def existing_keys(
    conn: AsyncConnection, claims: Iterable[tuple[str, str, str]]
) -> dict[tuple[str, str, str], tuple[str, str]]:
    """(tenant, namespace, key) → (body hash, event id) for the keys already used."""
    by_scope: dict[tuple[str, str], set[str]] = {}
    for tenant, namespace, key in claims:
        by_scope.setdefault((tenant, namespace), set()).add(key)
    found: dict[tuple[str, str, str], tuple[str, str]] = {}
    dialect = conn.dialect.name
    statement = _EXISTING_KEYS.get(dialect)
    c = idempotency_keys.c
    for (tenant, namespace), keys in by_scope.items():
        wanted = sorted(keys)
        if statement is None:
            rows = await conn.execute(
                sa.select(c.key, c.body_hash, c.event_id).where(
                    c.tenant == tenant, c.namespace == namespace, c.key.in_(wanted)
                )
            )
        else:
            listed: Any = wanted if dialect == "postgresql" else orjson.dumps(wanted).decode()
            rows = await conn.exec_driver_sql(statement, (tenant, namespace, listed))
        found.update({(tenant, namespace, key): (hash_, event_id) for key, hash_, event_id in rows})
    return found


async def insert(
    conn: AsyncConnection,
    event_rows: Sequence[Mapping[str, Any]],
    key_rows: Sequence[Mapping[str, Any]],
) -> None:
    """Store events and claim their idempotency keys (unique: a racing twin fails here)."""
    if key_rows:
        # In one order in every transaction: groups written at once never wait on each
        # other's keys crosswise (a deadlock, which one of them would pay for).
        ordered = sorted(key_rows, key=lambda r: (r["tenant"], r["namespace"], r["key"]))
        await conn.execute(idempotency_keys.insert(), ordered)
    if event_rows:
        await conn.execute(events.insert(), list(event_rows))


async def get(conn: AsyncConnection, event_id: str) -> Mapping[str, Any] | None:
    row = (await conn.execute(sa.select(events).where(events.c.id == event_id))).first()
    return None if row is None else dict(row._mapping)


async def get_many(
    conn: AsyncConnection, event_ids: Sequence[str], *, against_cancel: bool = False
) -> list[Mapping[str, Any]]:
    """Events by id. ``against_cancel``: held until the transaction ends against a
    cancellation (``lock_to_cancel``), which waits for it, or is waited for; planners
    holding the same events do not wait for each other (PostgreSQL's ``FOR KEY SHARE``;
    SQLite runs one write transaction at a time anyway)."""
    query = sa.select(events).where(among(conn, events.c.id, event_ids))
    if against_cancel:
        query = query.order_by(events.c.id).with_for_update(read=True, key_share=True)
    rows = await conn.execute(query)
    return [dict(row._mapping) for row in rows]


async def lock_to_cancel(
    conn: AsyncConnection, event_ids: Sequence[str]
) -> list[Mapping[str, Any]]:
    """The events to cancel, locked until the transaction ends: a planner that read them
    first finishes before (its deliveries are then there to cancel), one that comes after
    sees them cancelled. Rows are locked in id order, as planners lock them."""
    e = events.c
    rows = await conn.execute(
        sa.select(e.id, e.type, e.api_key_id, e.cancelled_at)
        .where(among(conn, e.id, event_ids))
        .order_by(e.id)
        .with_for_update()
    )
    return [dict(row._mapping) for row in rows]


async def ids_by_cancellation_key(
    conn: AsyncConnection, api_key_id: str, cancellation_key: str, limit: int
) -> list[tuple[str, bool]]:
    """Up to ``limit`` (id, cancelled already) of a key's events with
    ``cancellation_key``, those not cancelled yet first."""
    e = events.c
    cancelled = e.cancelled_at.is_not(None)
    rows = await conn.execute(
        sa.select(e.id, cancelled.label("cancelled"))
        .where(e.api_key_id == api_key_id, e.cancellation_key == cancellation_key)
        .order_by(cancelled, e.id)
        .limit(limit)
    )
    return [(row.id, bool(row.cancelled)) for row in rows]


async def mark_cancelled(conn: AsyncConnection, event_ids: Sequence[str], now: dt.datetime) -> None:
    await conn.execute(
        events.update()
        .where(among(conn, events.c.id, event_ids), events.c.cancelled_at.is_(None))
        .values(cancelled_at=now)
    )


async def mark_planned(conn: AsyncConnection, event_ids: Sequence[str], now: dt.datetime) -> None:
    await conn.execute(
        events.update()
        .where(among(conn, events.c.id, event_ids), events.c.planned_at.is_(None))
        .values(planned_at=now)
    )
