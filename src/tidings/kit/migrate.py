"""Schema migrations with Alembic, for SQLite and PostgreSQL alike; and whether a
database's schema is the one this version of Tidings was written for."""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

_SCRIPTS = Path(__file__).with_name("migrations")
UPGRADE_COMMAND = "tidings db upgrade"


def alembic_config(database_url: str) -> Config:
    """An Alembic configuration pointing at Tidings' migrations and the given database."""
    config = Config()
    config.set_main_option("script_location", str(_SCRIPTS))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Bring the database's schema up to ``revision``."""
    command.upgrade(alembic_config(database_url), revision)


def current(database_url: str) -> None:
    """Print the database's current revision."""
    command.current(alembic_config(database_url))


@functools.cache
def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config("sqlite://"))


def head() -> str:
    """The revision this version of Tidings needs: the newest of its migrations."""
    found = _scripts().get_current_head()
    assert found is not None, "the migrations have no head"
    return found


async def revision_of(conn: AsyncConnection) -> str | None:
    """The revision the database on ``conn`` is at; None when it was never migrated.
    Looks before it reads, so a PostgreSQL transaction is not aborted by the question."""
    exists = await conn.run_sync(lambda sync: sa.inspect(sync).has_table("alembic_version"))
    if not exists:
        return None
    found = await conn.execute(sa.text("SELECT version_num FROM alembic_version"))
    row = found.first()
    return None if row is None else str(row[0])


async def revision(database_url: str) -> str | None:
    """The revision of the database at ``database_url`` (see ``revision_of``).

    Raises:
        sqlalchemy.exc.DBAPIError, OSError: the database does not answer.
    """
    engine = create_async_engine(database_url, poolclass=sa.NullPool)
    try:
        async with engine.connect() as conn:
            return await revision_of(conn)
    finally:
        await engine.dispose()


def problem(found: str | None) -> str | None:
    """Why a database at revision ``found`` cannot be worked on by this version, in one
    line that says what to do; None when it is at the head."""
    needed = head()
    if found == needed:
        return None
    fix = f"run '{UPGRADE_COMMAND}' (or start with TIDINGS_MIGRATE_ON_START=true)"
    if found is None:
        return f"the database has no schema yet (this version needs revision {needed}): {fix}"
    if not _known(found):
        return (
            f"the database is at revision {found}, which this version does not know: a newer "
            f"Tidings migrated it; run that version (this one needs {needed})"
        )
    return f"the database schema is at revision {found}, this version needs {needed}: {fix}"


def _known(found: str) -> bool:
    try:
        return _scripts().get_revision(found) is not None
    except Exception:  # alembic raises several kinds for an id it has never seen
        return False


def upgradable(found: str | None) -> bool:
    """Whether ``upgrade`` can bring a database at ``found`` to the head: it is one of
    this version's revisions, or has none yet."""
    return found is None or _known(found)


_UPGRADE_LOCK = 0x7469_6469_6E67
"""The PostgreSQL advisory lock processes migrating on start take turns with."""


def upgrade_exclusive(database_url: str) -> None:
    """``upgrade`` to the head, one process at a time: on PostgreSQL, processes started
    together with TIDINGS_MIGRATE_ON_START take turns, and the later ones find it done."""
    if not database_url.startswith("postgresql"):
        upgrade(database_url)
        return

    def upgrade_on(connection: sa.Connection) -> None:
        config = alembic_config(database_url)
        config.attributes["connection"] = connection
        command.upgrade(config, "head")

    async def locked() -> None:
        engine = create_async_engine(database_url, poolclass=sa.NullPool)
        lock = sa.text("SELECT pg_advisory_lock(:key)")
        unlock = sa.text("SELECT pg_advisory_unlock(:key)")
        try:
            async with engine.connect() as conn:
                await conn.execute(lock, {"key": _UPGRADE_LOCK})
                await conn.commit()
                try:
                    await conn.run_sync(upgrade_on)
                    await conn.commit()
                finally:
                    await conn.execute(unlock, {"key": _UPGRADE_LOCK})
                    await conn.commit()
        finally:
            await engine.dispose()

    asyncio.run(locked())
