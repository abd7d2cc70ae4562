"""All SQL for webhook endpoints, their messages and the attempts at sending them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.kit.db import Database
from tidings.kit.tables import api_keys, deliveries, inbox_items
from tidings.kit.tables import webhook_attempts as attempts
from tidings.kit.tables import webhook_endpoints as endpoints
from tidings.kit.tables import webhook_messages as messages


async def add_endpoint(conn: AsyncConnection, row: Mapping[str, Any]) -> None:
    await conn.execute(endpoints.insert().values(**row))


async def count_endpoints(conn: AsyncConnection, api_key_id: str) -> int:
    """How many endpoints ``api_key_id`` has registered (on the ``api_key_id`` index)."""
    query = sa.select(sa.func.count()).where(endpoints.c.api_key_id == api_key_id)
    return int((await conn.execute(query)).scalar_one())


async def endpoint(conn: AsyncConnection, endpoint_id: str) -> dict[str, Any] | None:
    row = (await conn.execute(sa.select(endpoints).where(endpoints.c.id == endpoint_id))).first()
    return None if row is None else dict(row._mapping)


async def endpoints_page(
    conn: AsyncConnection, owner: str | None, after: str | None, limit: int
) -> list[dict[str, Any]]:
    """Endpoints in the order they were registered: ``owner``'s, or everyone's."""
    query = sa.select(endpoints)
    if owner is not None:
        query = query.where(endpoints.c.api_key_id == owner)
    if after is not None:
        query = query.where(endpoints.c.id > after)
    rows = await conn.execute(query.order_by(endpoints.c.id).limit(limit))
    return [dict(r._mapping) for r in rows]


async def update_endpoint(
    conn: AsyncConnection, endpoint_id: str, values: Mapping[str, Any]
) -> None:
    await conn.execute(endpoints.update().where(endpoints.c.id == endpoint_id).values(**values))


async def count_failure(conn: AsyncConnection, endpoint_id: str) -> int:
    """One more failed attempt in a row at the endpoint; returns how many now."""
    await conn.execute(
        endpoints.update()
        .where(endpoints.c.id == endpoint_id)
        .values(consecutive_failures=endpoints.c.consecutive_failures + 1)
    )
    found = await conn.execute(
        sa.select(endpoints.c.consecutive_failures).where(endpoints.c.id == endpoint_id)
    )
    return int(found.scalar_one_or_none() or 0)


async def delete_endpoint(conn: AsyncConnection, endpoint_id: str) -> None:
    """The endpoint with its messages and their attempts."""
    of_endpoint = sa.select(messages.c.id).where(messages.c.endpoint_id == endpoint_id)
    await conn.execute(attempts.delete().where(attempts.c.message_id.in_(of_endpoint)))
    await conn.execute(messages.delete().where(messages.c.endpoint_id == endpoint_id))
    await conn.execute(endpoints.delete().where(endpoints.c.id == endpoint_id))


async def message(conn: AsyncConnection, message_id: str) -> dict[str, Any] | None:
    row = (await conn.execute(sa.select(messages).where(messages.c.id == message_id))).first()
    return None if row is None else dict(row._mapping)


async def endpoints_of(conn: AsyncConnection, message_ids: Sequence[str]) -> dict[str, str]:
    """message id → its endpoint's id, for the messages that exist."""
    found: dict[str, str] = {}
    for start in range(0, len(message_ids), 500):
        rows = await conn.execute(
            sa.select(messages.c.id, messages.c.endpoint_id).where(
                messages.c.id.in_(message_ids[start : start + 500])
            )
        )
        found.update({row.id: row.endpoint_id for row in rows})
    return found


async def has_pending_before(conn: AsyncConnection, endpoint_id: str, message_id: str) -> bool:
    """Whether an older message to the endpoint is still waiting to be sent."""
    found = await conn.execute(
        sa.select(messages.c.id)
        .where(
            messages.c.endpoint_id == endpoint_id,
            messages.c.state == "pending",
            messages.c.id < message_id,
        )
        .limit(1)
    )
    return found.first() is not None


async def first_pending(
    conn: AsyncConnection, endpoint_id: str, after: str | None = None
) -> str | None:
    """The oldest message to the endpoint still waiting, newer than ``after`` if given."""
    query = sa.select(messages.c.id).where(
        messages.c.endpoint_id == endpoint_id, messages.c.state == "pending"
    )
    if after is not None:
        query = query.where(messages.c.id > after)
    found = await conn.execute(query.order_by(messages.c.id).limit(1))
    return found.scalar_one_or_none()


async def update_message(conn: AsyncConnection, message_id: str, values: Mapping[str, Any]) -> None:
    await conn.execute(messages.update().where(messages.c.id == message_id).values(**values))


async def add_attempt(conn: AsyncConnection, row: Mapping[str, Any]) -> None:
    await conn.execute(attempts.insert().values(**row))


async def messages_page(
    conn: AsyncConnection, endpoint_id: str, before: str | None, limit: int
) -> list[dict[str, Any]]:
    """The endpoint's messages, newest first, each with its attempts oldest first."""
    query = sa.select(messages).where(messages.c.endpoint_id == endpoint_id)
    if before is not None:
        query = query.where(messages.c.id < before)
    rows = [
        dict(r._mapping)
        for r in await conn.execute(query.order_by(messages.c.id.desc()).limit(limit))
    ]
    if not rows:
        return []
    tried: dict[str, list[dict[str, Any]]] = {}
    found = await conn.execute(
        sa.select(attempts)
        .where(attempts.c.message_id.in_([r["id"] for r in rows]))
        .order_by(attempts.c.at, attempts.c.id)
    )
    for attempt in found:
        tried.setdefault(attempt.message_id, []).append(dict(attempt._mapping))
    return [{**row, "attempts_log": tried.get(row["id"], [])} for row in rows]


async def rename_user(conn: AsyncConnection, user_id: str, pseudonym: str) -> int:
    """Name ``user_id`` by ``pseudonym`` in the payloads of the messages about their
    deliveries, sent or still waiting; returns how many changed. Run before the
    deliveries themselves are renamed: they are found by the user's id."""
    # Their deliveries: the rows, and the in-app deliveries that are their items.
    theirs = sa.union_all(
        sa.select(deliveries.c.id).where(deliveries.c.user_id == user_id),
        sa.select(inbox_items.c.id).where(inbox_items.c.user_id == user_id),
    )
    page = (
        sa.select(messages.c.id, messages.c.payload)
        .where(messages.c.delivery_id.in_(theirs.scalar_subquery()))
        .order_by(messages.c.id)
        .limit(500)
    )
    changed = 0
    after: str | None = None
    while True:
        query = page if after is None else page.where(messages.c.id > after)
        rows = (await conn.execute(query)).all()
        for row in rows:
            data = row.payload.get("data") if isinstance(row.payload, dict) else None
            if isinstance(data, dict) and data.get("user_id") == user_id:
                payload = {**row.payload, "data": {**data, "user_id": pseudonym}}
                await update_message(conn, row.id, {"payload": payload})
                changed += 1
        if len(rows) < 500:
            return changed
        after = rows[-1].id


async def listening_endpoints(conn: AsyncConnection) -> list[Any]:
    """The enabled endpoints of keys not revoked, with their types, states and the key's
    scopes."""
    e = endpoints.c
    rows = await conn.execute(
        sa.select(e.id, e.types, e.states, api_keys.c.scopes)
        .join(api_keys, api_keys.c.id == e.api_key_id)
        .where(e.enabled.is_(True), api_keys.c.revoked_at.is_(None))
        .order_by(e.id)
    )
    return list(rows)


async def add_messages(
    db: Database, conn: AsyncConnection, rows: Sequence[Mapping[str, Any]]
) -> set[str]:
    """Write messages (a repeated ``msg_id`` for an endpoint is ignored); the ids of
    those this call wrote."""
    await conn.execute(db.insert_ignore(messages), list(rows))
    found = await conn.execute(
        sa.select(messages.c.id).where(messages.c.id.in_([r["id"] for r in rows]))
    )
    return {row.id for row in found}
