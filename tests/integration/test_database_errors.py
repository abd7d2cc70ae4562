"""A database error never carries the statement's values: they are events' data,
addresses and links, and errors end up in logs."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy import exc

from tidings.kit.db import Database

SECRET = "https://tidings.test/reset?token=s3cret-reset-link"


@pytest.mark.parametrize("connection", ["transaction", "reader"])
async def test_a_failed_statement_does_not_show_its_parameters(
    database_url: str, connection: str
) -> None:
    db = Database(database_url)
    try:
        with pytest.raises(exc.DBAPIError) as failed:
            async with getattr(db, connection)() as conn:
                await conn.execute(
                    sa.text("SELECT link FROM no_such_table WHERE link = :link"), {"link": SECRET}
                )
        assert "no_such_table" in str(failed.value)
        assert "s3cret" not in str(failed.value)
        assert "s3cret" not in repr(failed.value)
    finally:
        await db.dispose()
