"""A console sign-out belongs to no user: erasing any user id, even one spelled like the
console's own names, never opens a session that was signed out."""

from __future__ import annotations

import httpx
import sqlalchemy as sa

from tidings.app.runtime import Runtime
from tidings.console import sessions
from tidings.kit import tables


async def test_erasing_console_key_id_does_not_bring_back_a_signed_out_session(
    client: httpx.AsyncClient, runtime: Runtime, producer: dict[str, str]
) -> None:
    key, operator_key = await runtime.auth.create_key("ops", ["admin"])
    signed_in = await client.post("/console/login", data={"key": operator_key})
    assert signed_in.status_code == 303, signed_in.text
    copied = client.cookies[sessions.COOKIE]
    page = (await client.get("/console/catalog")).text
    token = page.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]
    assert (await client.post("/console/logout", data={"csrf": token})).status_code == 303

    # A key with users:erase erases every id it likes, this one too.
    erased = await client.delete(f"/v1/users/console:{key.id}", headers=producer)
    assert erased.status_code in (204, 404), erased.text

    client.cookies.set(sessions.COOKIE, copied, path="/console")
    refused = await client.get("/console")
    assert refused.status_code == 303
    assert refused.headers["location"].startswith("/console/login")
    # The mark is stored under no user at all.
    async with runtime.db.reader() as conn:
        owners = {row[0] for row in await conn.execute(sa.select(tables.dedup_marks.c.user_id))}
    assert owners == {sessions.SIGNED_OUT_OWNER}
