"""What a claim of the SQL queue costs the database, on SQLite and PostgreSQL: one
statement, once schedules set by a clock that ran ahead were looked for; and that look
still happens, for the schedules of another process's clock, every so often."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy as sa

from tidings.delivery.plan_rows import next_page
from tidings.kit import queue_sql as queue_module
from tidings.kit import tables
from tidings.kit.clock import FrozenClock
from tidings.kit.db import Database, among
from tidings.kit.queue import NewJob
from tidings.kit.queue_sql import SqlQueue

LEASE = dt.timedelta(seconds=30)
START = dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    yield database
    await database.dispose()


def statements_of(db: Database, into: list[str]) -> Any:
    """Capture every statement (but SQLite's BEGIN) sent to the database."""

    def capture(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if not statement.lstrip().upper().startswith("BEGIN"):
            into.append(statement)

    return capture


async def test_a_claim_is_one_statement_once_schedules_were_looked_for(db: Database) -> None:
    queue = SqlQueue(db, FrozenClock(START))
    async with db.transaction() as conn:
        await queue.enqueue(conn, [NewJob("a", "plan", {}, lane=2), NewJob("b", "plan", {})])
    [first] = await queue.claim("w", 1, LEASE, lanes=[2])

    sent: list[str] = []
    capture = statements_of(db, sent)
    sa.event.listen(db.engine.sync_engine, "before_cursor_execute", capture)
    try:
        [second] = await queue.claim("w", 1, LEASE, lanes=[2])
        assert await queue.claim("w", 1, LEASE, lanes=[2]) == []
    finally:
        sa.event.remove(db.engine.sync_engine, "before_cursor_execute", capture)
    assert {first.id, second.id} == {"a", "b"}
    assert len(sent) == 2, sent
    assert all(statement.lstrip().upper().startswith("UPDATE JOBS") for statement in sent)


async def test_a_schedule_another_clock_set_ahead_is_brought_back_by_a_later_claim(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(queue_module, "BOUND_EVERY_SECONDS", 0.05)
    clock = FrozenClock(START)
    ours = SqlQueue(db, clock)
    ahead = FrozenClock(START + dt.timedelta(hours=1))
    theirs = SqlQueue(db, ahead)
    # This queue looks for such schedules first thing, before the other one sets any.
    assert await ours.claim("w", 10, LEASE, lanes=[2]) == []
    async with db.transaction() as conn:
        await theirs.enqueue(
            conn,
            [
                NewJob(
                    "later",
                    "plan",
                    {},
                    lane=2,
                    run_at=ahead.now() + LEASE,
                    delayed_from=ahead.now(),
                )
            ],
        )
    await asyncio.sleep(0.1)
    assert await ours.claim("w", 10, LEASE, lanes=[2]) == []
    # The delay now counts from this queue's clock, not from an hour ahead.
    clock.advance(LEASE.total_seconds() + 1)
    await asyncio.sleep(0.1)
    [job] = await ours.claim("w", 10, LEASE, lanes=[2])
    assert job.id == "later"


async def test_a_topics_next_page_is_claimed_before_the_emails_its_page_queued(
    db: Database,
) -> None:
    """A fan-out page queues its subscribers' emails and then the next page: the next
    page comes first in the lane, so planning a large topic does not wait for the
    emails of the pages before to be sent."""
    queue = SqlQueue(db, FrozenClock(START))
    event = {"id": "ev-1", "created_at": START - dt.timedelta(seconds=3)}
    emails = [NewJob(f"email:{i}", "email", {"n": i}, lane=2) for i in range(50)]
    async with db.transaction() as conn:
        await queue.enqueue(conn, emails)
        await queue.enqueue(conn, [next_page(event, "u-0049", 2, START)])
    [first] = await queue.claim("w", 1, LEASE, lanes=[2])
    assert first.kind == "fanout"
    assert first.payload == {"event": "ev-1", "after": "u-0049"}
    # A clock behind the event's own: due now, not later.
    behind = START - dt.timedelta(minutes=5)
    assert next_page(event, "u-0099", 2, behind).run_at == behind
    # A delay of nothing from then: a clock that ran ahead would be brought back.
    continued = next_page(event, "u-0099", 2, START)
    assert continued.delayed_from == continued.run_at


async def test_a_look_up_by_many_ids_matches_whole_values_only(db: Database) -> None:
    """``among`` binds one array on PostgreSQL: a value longer than the column is not
    cut to the column's length (and so does not match a stored prefix of it)."""
    stored = "u" * 255
    now = START
    async with db.transaction() as conn:
        await conn.execute(
            sa.insert(tables.users).values(id=stored, created_at=now, updated_at=now)
        )
    async with db.reader() as conn:
        c = tables.users.c
        found = await conn.execute(sa.select(c.id).where(among(conn, c.id, [stored + "x"])))
        assert found.all() == []
        found = await conn.execute(sa.select(c.id).where(among(conn, c.id, [stored, "u-2"])))
        assert found.scalars().all() == [stored]
        assert (await conn.execute(sa.select(c.id).where(among(conn, c.id, [])))).all() == []
