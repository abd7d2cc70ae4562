"""How the database runs reads and writes on PostgreSQL: a read outside a transaction, a
write inside one, on one pool."""

from __future__ import annotations

import asyncio
from pathlib import Path

import sqlalchemy as sa

from tests.conftest import fresh_database
from tidings.kit import tables
from tidings.kit.db import Database, among


async def test_a_read_runs_outside_a_transaction_and_a_write_inside_one(tmp_path: Path) -> None:
    async with fresh_database("postgres", tmp_path) as url:
        db = Database(url)
        try:
            # now() is the start of the statement's transaction: outside one, each
            # statement is its own; inside one, it stands still.
            async with db.reader() as conn:
                first = (await conn.execute(sa.text("SELECT now()"))).scalar_one()
                await asyncio.sleep(0.02)
                second = (await conn.execute(sa.text("SELECT now()"))).scalar_one()
            assert second > first
            async with db.transaction() as conn:
                first = (await conn.execute(sa.text("SELECT now()"))).scalar_one()
                await asyncio.sleep(0.02)
                second = (await conn.execute(sa.text("SELECT now()"))).scalar_one()
            assert second == first
            # The reads share the writes' pool: one engine to dispose, one to watch.
            assert db.engines == (db.engine,)
        finally:
            await db.dispose()


async def test_a_write_that_fails_leaves_nothing_and_reads_still_work(tmp_path: Path) -> None:
    async with fresh_database("postgres", tmp_path) as url:
        db = Database(url)
        try:
            query = sa.select(sa.func.count()).select_from(tables.jobs)
            try:
                async with db.transaction() as conn:
                    await conn.execute(
                        sa.text(
                            "INSERT INTO jobs (id, kind, payload, lane, run_at, created_at) "
                            "VALUES ('j', 'k', '{}', 2, now(), now())"
                        )
                    )
                    raise RuntimeError("the write fails after its insert")
            except RuntimeError:
                pass
            async with db.reader() as conn:
                assert (await conn.execute(query)).scalar_one() == 0
        finally:
            await db.dispose()


async def test_among_sends_one_array_whatever_the_number_of_ids(tmp_path: Path) -> None:
    """``among`` on PostgreSQL is ``= ANY(array)``: the same statement text for one id and
    for many, so a connection prepares it once; and it finds what ``IN`` would."""
    async with fresh_database("postgres", tmp_path) as url:
        db = Database(url)
        try:
            async with db.transaction() as conn:
                await conn.execute(
                    sa.text(
                        "INSERT INTO jobs (id, kind, payload, lane, run_at, created_at) "
                        "SELECT 'j' || n, 'k', '{}', 2, now(), now() "
                        "FROM generate_series(1, 5) AS n"
                    )
                )
            texts: set[str] = set()
            for wanted in (["j1"], ["j1", "j2", "j3"], ["j2", "j4", "j5", "nope"]):
                async with db.reader() as conn:
                    statement = sa.select(tables.jobs.c.id).where(
                        among(conn, tables.jobs.c.id, wanted)
                    )
                    texts.add(str(statement.compile(dialect=conn.dialect)))
                    found = {row[0] for row in await conn.execute(statement)}
                assert found == {w for w in wanted if w != "nope"}
            assert len(texts) == 1
        finally:
            await db.dispose()
