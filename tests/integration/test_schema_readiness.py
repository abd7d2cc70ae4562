"""``/readyz`` of a PostgreSQL process answers 503 while the schema is behind this
version, naming ``tidings db upgrade``, and 200 once it is up to date."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx

from tests.conftest import create_pg_database, drop_pg_database, pg_url
from tidings.app.asgi import create_app
from tidings.app.wiring import build_runtime
from tidings.kit import migrate
from tidings.kit.settings import Settings


async def test_a_schema_behind_this_version_is_not_ready(
    make_settings: Callable[..., Settings],
) -> None:
    name = await create_pg_database()
    try:
        await asyncio.to_thread(migrate.upgrade, pg_url(name), "0003")
        runtime = build_runtime(make_settings(database_url=pg_url(name)))
        application = create_app(runtime=runtime)
        transport = httpx.ASGITransport(app=application)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://t.test") as client:
                behind = await client.get("/readyz")
                assert behind.status_code == 503, behind.text
                checks = behind.json()["checks"]
                assert checks["database"] == "ok"
                assert checks["schema"].startswith("the database schema is at revision 0003")
                assert "'tidings db upgrade'" in checks["schema"]

                await asyncio.to_thread(migrate.upgrade, pg_url(name))
                ready = await client.get("/readyz")
                assert ready.status_code == 200, ready.text
                assert ready.json()["checks"]["schema"] == "ok"
        finally:
            await runtime.close()
    finally:
        await drop_pg_database(name)
