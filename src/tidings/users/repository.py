"""All SQL for profiles, topics and subscriptions."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.kit.db import Database, among
from tidings.kit.tables import (
    broadcast_states,
    channel_addresses,
    dedup_marks,
    deliveries,
    digest_entries,
    digests,
    erasures,
    events,
    inbox_items,
    mailbox,
    preference_sets,
    subscriptions,
    throttle_hits,
    topics,
    users,
)

PROFILE_FIELDS = ("email", "name", "locale", "timezone")


async def upsert_profiles(
    db: Database, conn: AsyncConnection, profiles: Sequence[Mapping[str, Any]], now: dt.datetime
) -> None:
    """Create or update profiles; only the fields each mapping names are changed."""
    # One row per user, later fields winning: a statement may not update a row twice.
    merged: dict[str, dict[str, Any]] = {}
    for profile in profiles:
        merged.setdefault(profile["id"], {}).update(profile)
    by_fields: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    # Rows in id order, so concurrent writers lock shared users in the same order.
    for profile in sorted(merged.values(), key=lambda p: str(p["id"])):
        fields = tuple(f for f in PROFILE_FIELDS if f in profile)
        row = {"id": profile["id"], "created_at": now, "updated_at": now}
        row.update({f: profile[f] for f in fields})
        by_fields.setdefault(fields, []).append(row)
    for fields, rows in by_fields.items():
        stmt = db.upsert(users)
        changes = {f: stmt.excluded[f] for f in fields}
        changes["updated_at"] = stmt.excluded.updated_at
        await conn.execute(
            stmt.on_conflict_do_update(index_elements=[users.c.id], set_=changes), rows
        )


async def replace_profile(
    db: Database, conn: AsyncConnection, user_id: str, fields: Mapping[str, Any], now: dt.datetime
) -> None:
    values = {f: fields.get(f) for f in PROFILE_FIELDS}
    stmt = db.upsert(users).values(id=user_id, created_at=now, updated_at=now, **values)
    await conn.execute(
        stmt.on_conflict_do_update(index_elements=[users.c.id], set_={**values, "updated_at": now})
    )


async def get_profile(conn: AsyncConnection, user_id: str) -> Mapping[str, Any] | None:
    row = (await conn.execute(sa.select(users).where(users.c.id == user_id))).first()
    return None if row is None else dict(row._mapping)


async def get_profiles(
    conn: AsyncConnection, user_ids: Iterable[str]
) -> dict[str, Mapping[str, Any]]:
    wanted = list(set(user_ids))
    found: dict[str, Mapping[str, Any]] = {}
    for start in range(0, len(wanted), 1000):
        rows = await conn.execute(
            sa.select(users).where(among(conn, users.c.id, wanted[start : start + 1000]))
        )
        found.update({row.id: row._mapping for row in rows})
    return found


async def lock_user(db: Database, conn: AsyncConnection, user_id: str) -> None:
    """Wait for any planning of ``user_id`` to commit, and hold it off until this
    transaction ends: the per-recipient lock the planner takes (same key, same space).
    SQLite has a single writer and needs none."""
    if db.is_postgres:
        await conn.execute(
            sa.text("SELECT pg_advisory_xact_lock(hashtextextended(:user, 7411))"),
            {"user": user_id},
        )


async def latest_event_time(conn: AsyncConnection) -> dt.datetime | None:
    """When the newest stored event was accepted (the index on ``created_at`` answers)."""
    latest: dt.datetime | None = (
        await conn.execute(sa.select(sa.func.max(events.c.created_at)))
    ).scalar_one()
    if latest is not None and latest.tzinfo is None:
        latest = latest.replace(tzinfo=dt.UTC)  # SQLite keeps naive UTC
    return latest


async def record_erasure(
    db: Database, conn: AsyncConnection, pseudonym: str, before: dt.datetime, now: dt.datetime
) -> None:
    """Keep the erasure: work for events accepted up to ``before`` is dropped; a later
    erasure of the same id moves the moment on, never back."""
    stmt = db.upsert(erasures).values(pseudonym=pseudonym, erased_before=before, created_at=now)
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[erasures.c.pseudonym],
            set_={"erased_before": before, "created_at": now},
            where=erasures.c.erased_before < before,
        )
    )


async def erasures_of(conn: AsyncConnection, pseudonyms: Iterable[str]) -> dict[str, dt.datetime]:
    """pseudonym → the moment before which its work is dropped, for those erased."""
    wanted = list(set(pseudonyms))
    found: dict[str, dt.datetime] = {}
    for start in range(0, len(wanted), 1000):
        rows = await conn.execute(
            sa.select(erasures.c.pseudonym, erasures.c.erased_before).where(
                among(conn, erasures.c.pseudonym, wanted[start : start + 1000])
            )
        )
        found.update({row.pseudonym: row.erased_before for row in rows})
    return found


async def erased_since(conn: AsyncConnection, since: dt.datetime) -> dict[str, dt.datetime]:
    """pseudonym → the moment before which its work is dropped, for the users erased at
    ``since`` or later."""
    rows = await conn.execute(
        sa.select(erasures.c.pseudonym, erasures.c.erased_before).where(
            erasures.c.created_at >= since
        )
    )
    return {row.pseudonym: row.erased_before for row in rows}


async def erase_user(conn: AsyncConnection, user_id: str, pseudonym: str, now: dt.datetime) -> bool:
    """Delete a user's profile, inbox, subscriptions, preferences, channel addresses
    (push subscriptions), pending digests, rule state and caught mail; pseudonymise what
    must stay (their pending deliveries were stopped by the delivery package's erasure
    listener). Returns whether anything was found."""
    profile = await get_profile(conn, user_id)
    existed = profile is not None
    await conn.execute(users.delete().where(users.c.id == user_id))
    # The events of their in-app deliveries that are their items, read before the items go.
    reached = {
        row.event_id
        for row in await conn.execute(
            sa.select(inbox_items.c.event_id).where(inbox_items.c.user_id == user_id).distinct()
        )
    }
    for table in (
        inbox_items,
        broadcast_states,
        channel_addresses,
        subscriptions,
        digest_entries,
        digests,
    ):
        await conn.execute(table.delete().where(table.c.user_id == user_id))
    await conn.execute(dedup_marks.delete().where(dedup_marks.c.user_id == user_id))
    await conn.execute(
        throttle_hits.delete().where(
            throttle_hits.c.scope.startswith(f"{user_id}|", autoescape=True)
        )
    )
    await conn.execute(
        preference_sets.delete().where(
            preference_sets.c.owner_kind == "user", preference_sets.c.owner_id == user_id
        )
    )
    theirs = sa.select(deliveries.c.id).where(deliveries.c.user_id == user_id)
    caught: sa.ColumnElement[bool] = mailbox.c.delivery_id.in_(theirs.scalar_subquery())
    if profile is not None and profile.get("email"):
        caught = sa.or_(caught, mailbox.c.recipient == profile["email"])
    await conn.execute(mailbox.delete().where(caught))
    event_ids = sorted(
        reached
        | {
            row.event_id
            for row in await conn.execute(
                sa.select(deliveries.c.event_id).where(deliveries.c.user_id == user_id).distinct()
            )
        }
    )
    await conn.execute(
        deliveries.update().where(deliveries.c.user_id == user_id).values(user_id=pseudonym)
    )
    await forget_in_events(conn, {event_id: {user_id: pseudonym} for event_id in event_ids})
    return existed or bool(event_ids)


async def forget_in_events(conn: AsyncConnection, renamed: Mapping[str, Mapping[str, str]]) -> None:
    """In each event (id → {user id → pseudonym}), name those recipients by their
    pseudonym and drop the profile fields the event carried for them."""
    event_ids = list(renamed)
    for start in range(0, len(event_ids), 500):
        rows = await conn.execute(
            sa.select(events.c.id, events.c.recipients, events.c.recipient_profiles).where(
                events.c.id.in_(event_ids[start : start + 500])
            )
        )
        for row in rows.all():
            names = renamed[row.id]
            changes: dict[str, Any] = {}
            if row.recipients and any(r in names for r in row.recipients):
                changes["recipients"] = [names.get(r, r) for r in row.recipients]
            profiles = row.recipient_profiles
            if isinstance(profiles, dict) and any(u in profiles for u in names):
                changes["recipient_profiles"] = {
                    u: fields for u, fields in profiles.items() if u not in names
                }
            if changes:
                await conn.execute(events.update().where(events.c.id == row.id).values(**changes))


async def subscribe(
    db: Database, conn: AsyncConnection, topic: str, user_ids: Sequence[str], now: dt.datetime
) -> int:
    await conn.execute(db.insert_ignore(topics).values(key=topic, created_at=now))
    result = await conn.execute(
        db.insert_ignore(subscriptions).returning(subscriptions.c.user_id),
        [{"topic": topic, "user_id": u, "created_at": now} for u in dict.fromkeys(user_ids)],
    )
    return len(result.all())


async def unsubscribe(conn: AsyncConnection, topic: str, user_ids: Sequence[str]) -> int:
    result = await conn.execute(
        subscriptions.delete().where(
            subscriptions.c.topic == topic, subscriptions.c.user_id.in_(list(user_ids))
        )
    )
    return result.rowcount


async def subscriber_page(
    conn: AsyncConnection, topic: str, after: str | None, limit: int
) -> list[Mapping[str, Any]]:
    """Subscribers in user-id order after ``after``: a keyset page, cheap at any depth."""
    query = sa.select(subscriptions.c.user_id, subscriptions.c.created_at).where(
        subscriptions.c.topic == topic
    )
    if after is not None:
        query = query.where(subscriptions.c.user_id > after)
    rows = await conn.execute(query.order_by(subscriptions.c.user_id).limit(limit))
    return [dict(row._mapping) for row in rows]


def _insert_ignore(conn: AsyncConnection, table: sa.Table) -> Any:
    """``INSERT … ON CONFLICT DO NOTHING`` in the connection's dialect."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    return sqlite.insert(table).on_conflict_do_nothing()
