"""The migrations build exactly the schema the code declares, on both engines."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from tidings.kit import tables


def _differences(connection: sa.Connection) -> list[object]:
    context = MigrationContext.configure(connection)
    return list(compare_metadata(context, tables.metadata))


async def test_migrated_schema_matches_the_tables(database_url: str) -> None:
    engine = create_async_engine(database_url, poolclass=sa.NullPool)
    try:
        async with engine.connect() as conn:
            differences = await conn.run_sync(_differences)
    finally:
        await engine.dispose()
    assert differences == []
