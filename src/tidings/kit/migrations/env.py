"""Alembic's environment: runs migrations over the async engine of either dialect."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
from alembic import context
from sqlalchemy.ext.asyncio import create_async_engine

from tidings.kit import tables

target_metadata = tables.metadata


def _run(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async(url: str) -> None:
    engine = create_async_engine(url, poolclass=sa.NullPool)
    async with engine.connect() as connection:
        await connection.run_sync(_run)
        await connection.commit()
    await engine.dispose()


def _main() -> None:
    url = context.config.get_main_option("sqlalchemy.url")
    assert url is not None
    existing = context.config.attributes.get("connection")
    if existing is not None:
        _run(existing)
        return
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(_run_async(url))
    else:  # pragma: no cover - called from inside a loop: run in a thread
        import threading

        thread = threading.Thread(target=lambda: asyncio.run(_run_async(url)))
        thread.start()
        thread.join()


_main()
