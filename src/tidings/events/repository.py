"""All SQL for events and idempotency keys."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.kit.tables import events, idempotency_keys


async def existing_keys(
    conn: AsyncConnection, claims: Iterable[tuple[str, str, str]]
) -> dict[tuple[str, str, str], tuple[str, str]]:
    """(tenant, namespace, key) → (body hash, event id) for the keys already used."""
    by_scope: dict[tuple[str, str], set[str]] = {}
    for tenant, namespace, key in claims:
        by_scope.setdefault((tenant, namespace), set()).add(key)
    found: dict[tuple[str, str, str], tuple[str, str]] = {}
    c = idempotency_keys.c
    for (tenant, namespace), keys in by_scope.items():
        wanted = sorted(keys)
        for start in range(0, len(wanted), 500):
            # ``tenant = ? AND namespace = ? AND key IN (…)`` is a primary-key range probe
            # on both engines; a row-value ``(…) IN (…)`` is planned as a scan of the table.
            rows = await conn.execute(
                sa.select(c.key, c.body_hash, c.event_id).where(
                    c.tenant == tenant,
                    c.namespace == namespace,
                    c.key.in_(wanted[start : start + 500]),
                )
            )
            found.update({(tenant, namespace, r.key): (r.body_hash, r.event_id) for r in rows})
    return found


async def insert(
    conn: AsyncConnection,
    event_rows: Sequence[Mapping[str, Any]],
    key_rows: Sequence[Mapping[str, Any]],
) -> None:
    """Store events and claim their idempotency keys (unique: a racing twin fails here)."""
    if key_rows:
        await conn.execute(idempotency_keys.insert(), list(key_rows))
    if event_rows:
        await conn.execute(events.insert(), list(event_rows))


async def get(conn: AsyncConnection, event_id: str) -> Mapping[str, Any] | None:
    row = (await conn.execute(sa.select(events).where(events.c.id == event_id))).first()
    return None if row is None else dict(row._mapping)


async def get_many(conn: AsyncConnection, event_ids: Sequence[str]) -> list[Mapping[str, Any]]:
    rows = await conn.execute(sa.select(events).where(events.c.id.in_(list(event_ids))))
    return [dict(row._mapping) for row in rows]


async def mark_planned(conn: AsyncConnection, event_ids: Sequence[str], now: dt.datetime) -> None:
    await conn.execute(
        events.update()
        .where(events.c.id.in_(list(event_ids)), events.c.planned_at.is_(None))
        .values(planned_at=now)
    )
