"""Migration 0008 on a database filled by the schema before it: stored idempotency keys
belong to the key that published their event, and existing keys keep what they could do."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from tests.conftest import create_pg_database, drop_pg_database, pg_url
from tidings.app.asgi import create_app
from tidings.app.wiring import build_runtime
from tidings.auth import keys
from tidings.events.schemas import EventIn
from tidings.events.service import hash_of, stored_body
from tidings.kit import migrate, tables
from tidings.kit.settings import Settings

NOW = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC)
EVENT: dict[str, Any] = {
    "type": "comment.created",
    "idempotency_key": "comment-42",
    "actor": {"id": "u-ann", "name": "Ann"},
    "recipients": ["u-bob"],
    "data": {
        "board": {"id": "b-1", "name": "Roadmap"},
        "comment": {"id": "c-1", "text": "Looks good"},
    },
}

old_api_keys = sa.table(
    "api_keys",
    sa.column("id", sa.String),
    sa.column("name", sa.String),
    sa.column("prefix", sa.String),
    sa.column("secret_hash", sa.String),
    sa.column("scopes", tables.JSON),
    sa.column("created_at", tables.UTCDateTime()),
)
old_events = sa.table(
    "events",
    sa.column("id", sa.String),
    sa.column("tenant", sa.String),
    sa.column("type", sa.String),
    sa.column("idempotency_key", sa.String),
    sa.column("actor", tables.JSON),
    sa.column("recipients", tables.JSON),
    sa.column("data", tables.JSON),
    sa.column("api_key_id", sa.String),
    sa.column("created_at", tables.UTCDateTime()),
    sa.column("planned_at", tables.UTCDateTime()),
)
old_idempotency_keys = sa.table(
    "idempotency_keys",
    sa.column("tenant", sa.String),
    sa.column("key", sa.String),
    sa.column("body_hash", sa.String),
    sa.column("event_id", sa.String),
    sa.column("created_at", tables.UTCDateTime()),
)


@pytest.fixture(params=["sqlite", "postgres"])
async def database_at_0007(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """An empty database with the schema of revision 0007."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
        await asyncio.to_thread(migrate.upgrade, url, "0007")
        yield url
        return
    name = await create_pg_database()
    try:
        url = pg_url(name)
        await asyncio.to_thread(migrate.upgrade, url, "0007")
        yield url
    finally:
        await drop_pg_database(name)


def body_hash(event: dict[str, Any]) -> str:
    """The hash ingest keeps beside an idempotency key (the same before and after the
    fields added since: they count only when set)."""
    return hash_of(stored_body(EventIn.model_validate(event)))


async def fill_old_schema(url: str) -> dict[str, str]:
    """Two producer keys and an operator's, an event with its idempotency key, and an
    idempotency key whose event retention removed; returns the producer keys' plaintexts."""
    made = {name: keys.generate() for name in ("comments", "mentions", "ops")}
    engine = create_async_engine(url, poolclass=sa.NullPool)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                old_api_keys.insert(),
                [
                    {
                        "id": f"k-{name}",
                        "name": name,
                        "prefix": generated.prefix,
                        "secret_hash": generated.secret_hash,
                        "scopes": {"comments": ["comment.*"], "mentions": ["mention.*", "*"]}.get(
                            name, ["admin"]
                        ),
                        "created_at": NOW,
                    }
                    for name, generated in made.items()
                ],
            )
            await conn.execute(
                old_events.insert().values(
                    id="e-1",
                    tenant="default",
                    type=EVENT["type"],
                    idempotency_key=EVENT["idempotency_key"],
                    actor=EVENT["actor"],
                    recipients=EVENT["recipients"],
                    data=EVENT["data"],
                    api_key_id="k-comments",
                    created_at=NOW,
                    planned_at=NOW,
                )
            )
            await conn.execute(
                old_idempotency_keys.insert(),
                [
                    {
                        "tenant": "default",
                        "key": EVENT["idempotency_key"],
                        "body_hash": body_hash(EVENT),
                        "event_id": "e-1",
                        "created_at": NOW,
                    },
                    {
                        "tenant": "default",
                        "key": "gone-1",
                        "body_hash": "0" * 64,
                        "event_id": "e-removed",
                        "created_at": NOW,
                    },
                ],
            )
    finally:
        await engine.dispose()
    return {name: generated.plaintext for name, generated in made.items()}


async def stored(url: str) -> tuple[set[tuple[str, str, str]], dict[str, list[str]]]:
    """The idempotency keys as (tenant, namespace, key), and every key's scopes."""
    engine = create_async_engine(url, poolclass=sa.NullPool)
    try:
        async with engine.connect() as conn:
            c = tables.idempotency_keys.c
            claims = {
                (r.tenant, r.namespace, r.key)
                for r in await conn.execute(sa.select(c.tenant, c.namespace, c.key))
            }
            k = tables.api_keys.c
            scopes = {r.id: list(r.scopes) for r in await conn.execute(sa.select(k.id, k.scopes))}
    finally:
        await engine.dispose()
    return claims, scopes


async def test_0008_namespaces_stored_idempotency_keys_and_keeps_old_keys_working(
    database_at_0007: str, make_settings: Callable[..., Settings]
) -> None:
    url = database_at_0007
    plaintexts = await fill_old_schema(url)
    await asyncio.to_thread(migrate.upgrade, url, "0008")

    claims, scopes = await stored(url)
    assert claims == {
        ("default", "k-comments", "comment-42"),
        ("default", "legacy", "gone-1"),
    }
    grandfathered = set(keys.CAPABILITIES) - {keys.DEV_MAILBOX}
    assert scopes["k-comments"][0] == "comment.*"
    assert set(scopes["k-comments"]) == {"comment.*", *grandfathered}
    assert set(scopes["k-mentions"]) == {"mention.*", "*", *grandfathered}
    assert scopes["k-ops"] == ["admin"]

    await asyncio.to_thread(migrate.upgrade, url)
    application = create_app(runtime=build_runtime(make_settings(database_url=url)))
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://t.test") as client:

            def auth(name: str) -> dict[str, str]:
                return {"Authorization": f"Bearer {plaintexts[name]}"}

            replay = await client.post("/v1/events", json=EVENT, headers=auth("comments"))
            assert replay.status_code == 202, replay.text
            assert replay.json()["event_id"] == "e-1"
            other = await client.post("/v1/events", json=EVENT, headers=auth("mentions"))
            assert other.status_code == 202, other.text
            assert other.json()["event_id"] != "e-1"
            # What every key could do before, an existing key still may.
            profile = await client.put(
                "/v1/users/u-bob", json={"email": "bob@example.com"}, headers=auth("comments")
            )
            assert profile.status_code == 200, profile.text
            mailbox = await client.get("/v1/dev/mailbox", headers=auth("comments"))
            assert mailbox.status_code == 403


async def test_a_downgrade_and_upgrade_again_widens_no_key_given_explicit_scopes(
    database_at_0007: str,
) -> None:
    """Keys made under 0008 keep exactly their scopes through a downgrade to 0007 and the
    next upgrade; a key made while the schema was at 0007 could do everything there, and
    is grandfathered like any other key of that schema."""
    from alembic import command

    url = database_at_0007
    await fill_old_schema(url)
    await asyncio.to_thread(migrate.upgrade, url, "0008")

    async def add_key(key_id: str, scopes: list[str]) -> None:
        generated = keys.generate()
        engine = create_async_engine(url, poolclass=sa.NullPool)
        try:
            async with engine.begin() as conn:
                await conn.execute(
                    old_api_keys.insert().values(
                        id=key_id,
                        name=key_id,
                        prefix=generated.prefix,
                        secret_hash=generated.secret_hash,
                        scopes=scopes,
                        created_at=NOW,
                    )
                )
        finally:
            await engine.dispose()

    await add_key("k-narrow", ["comment.*"])
    _claims, before = await stored(url)
    await asyncio.to_thread(command.downgrade, migrate.alembic_config(url), "0007")
    await add_key("k-made-at-0007", ["board.*"])
    await asyncio.to_thread(migrate.upgrade, url, "0008")

    _claims, after = await stored(url)
    grandfathered = set(keys.CAPABILITIES) - {keys.DEV_MAILBOX}
    assert after["k-narrow"] == ["comment.*"]
    for key_id in ("k-comments", "k-mentions", "k-ops"):
        assert after[key_id] == before[key_id]
    assert set(after["k-made-at-0007"]) == {"board.*", *grandfathered}
    assert not any("!scoped" in scopes for scopes in after.values())
