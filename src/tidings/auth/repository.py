"""All SQL for API keys."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.auth.keys import ApiKey
from tidings.kit.tables import api_keys


async def insert(
    conn: AsyncConnection,
    *,
    key_id: str,
    name: str,
    prefix: str,
    secret_hash: str,
    scopes: list[str],
    now: dt.datetime,
) -> None:
    await conn.execute(
        api_keys.insert().values(
            id=key_id,
            name=name,
            prefix=prefix,
            secret_hash=secret_hash,
            scopes=scopes,
            created_at=now,
        )
    )


async def by_prefix(conn: AsyncConnection, prefix: str) -> tuple[ApiKey, str] | None:
    """The key with this prefix and its stored hash."""
    row = (await conn.execute(sa.select(api_keys).where(api_keys.c.prefix == prefix))).first()
    return None if row is None else (_to_key(row._mapping), row.secret_hash)


async def all_keys(conn: AsyncConnection) -> list[ApiKey]:
    rows = await conn.execute(sa.select(api_keys).order_by(api_keys.c.created_at))
    return [_to_key(row._mapping) for row in rows]


async def revoke(conn: AsyncConnection, key_id: str, now: dt.datetime) -> bool:
    result = await conn.execute(
        api_keys.update()
        .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return result.rowcount > 0


def _to_key(row: Any) -> ApiKey:
    return ApiKey(
        id=row["id"],
        name=row["name"],
        prefix=row["prefix"],
        scopes=tuple(row["scopes"]),
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
    )
