"""Database.insert_rows_ignore: one statement on PostgreSQL, the same rows as executemany."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy as sa

from tidings.kit.db import Database
from tidings.kit.tables import delivery_transitions, inbox_items

NOW = dt.datetime(2026, 11, 27, 3, 0, tzinfo=dt.UTC)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    yield database
    await database.dispose()


def item(item_id: str, **overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": item_id,
        "user_id": "u-bob",
        "tenant": "acme",
        "event_id": "ev-1",
        "type": "comment.created",
        "category": "comments",
        "title": "Ann commented",
        "body": "Looks good",
        "action_url": None,
        "actor": {"id": "u-ann", "name": "Ann"},
        "created_at": NOW,
        "group_key": None,
        "group_count": 1,
        "group_actors": None,
        "updated_at": None,
    }
    return {**row, **overrides}


async def test_rows_written_twice_are_written_once(db: Database) -> None:
    rows = [item("i-1"), item("i-2", actor=None, group_actors=[{"id": "u-ann"}])]
    async with db.transaction() as conn:
        assert sorted(await db.insert_rows_ignore(conn, inbox_items, rows, returning="id")) == [
            "i-1",
            "i-2",
        ]
    async with db.transaction() as conn:
        again = [*rows, item("i-3"), item("i-3")]
        assert await db.insert_rows_ignore(conn, inbox_items, again, returning="id") == ["i-3"]
        assert await db.insert_rows_ignore(conn, inbox_items, []) == []
    async with db.reader() as conn:
        found = (await conn.execute(sa.select(inbox_items).order_by(inbox_items.c.id))).all()
    assert [row.id for row in found] == ["i-1", "i-2", "i-3"]
    first, second, _ = (row._mapping for row in found)
    assert first["actor"] == {"id": "u-ann", "name": "Ann"}
    assert first["created_at"] == NOW
    assert first["updated_at"] is None
    assert second["group_actors"] == [{"id": "u-ann"}]
    # None in a JSON column is JSON null, as the executemany path writes it.
    async with db.reader() as conn:
        sql_nulls = (
            await conn.execute(
                sa.select(sa.func.count()).where(
                    inbox_items.c.id == "i-2", inbox_items.c.actor.is_(None)
                )
            )
        ).scalar_one()
    assert sql_nulls == 0


async def test_defaults_fill_the_columns_a_row_does_not_give(db: Database) -> None:
    rows = [
        {"id": "t-1", "delivery_id": "d-1", "state": "planned", "at": NOW},
        {"id": "t-2", "delivery_id": "d-1", "state": "sent", "at": NOW, "stage": "email"},
    ]
    async with db.transaction() as conn:
        await db.insert_rows_ignore(
            conn, delivery_transitions, rows, defaults={"stage": "plan", "attempt": 2}
        )
    async with db.reader() as conn:
        found = (
            await conn.execute(
                sa.select(
                    delivery_transitions.c.id,
                    delivery_transitions.c.stage,
                    delivery_transitions.c.attempt,
                    delivery_transitions.c.reason,
                ).order_by(delivery_transitions.c.id)
            )
        ).all()
    assert [tuple(row) for row in found] == [("t-1", "plan", 2, None), ("t-2", "email", 2, None)]


async def test_a_naive_time_is_refused(db: Database) -> None:
    naive = {"id": "t-1", "delivery_id": "d-1", "state": "planned", "at": NOW.replace(tzinfo=None)}
    with pytest.raises(Exception, match="naive datetime"):
        async with db.transaction() as conn:
            await db.insert_rows_ignore(conn, delivery_transitions, [naive])
