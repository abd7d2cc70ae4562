"""Shared fixtures: a fresh database per test on SQLite and on the real PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from tidings.app.asgi import create_app
from tidings.app.runtime import Runtime
from tidings.app.wiring import build_runtime
from tidings.auth import keys
from tidings.kit import migrate
from tidings.kit.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
CATALOG = ROOT / "catalog"
PG_HOST = os.environ.get("TIDINGS_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("TIDINGS_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("TIDINGS_TEST_PG_USER", "postgres")

CANONICAL_EVENT: dict[str, Any] = {
    "type": "comment.created",
    "idempotency_key": "c-1",
    "actor": {"id": "u-ann", "name": "Ann"},
    "recipients": [{"id": "u-bob", "email": "bob@example.com"}],
    "data": {
        "board": {"id": "b-1", "name": "Roadmap"},
        "comment": {"id": "c-1", "text": "Looks good"},
    },
}


def service_missing(what: str, exc: BaseException) -> None:
    """A needed service is not there: the test fails, saying which and how to start it."""
    pytest.fail(f"{what} is not reachable: {exc}; see README.md for the services the tests use")


async def create_pg_database() -> str:
    """A new, empty PostgreSQL database; returns its name."""
    name = f"tidings_test_{uuid.uuid4().hex[:12]}"
    try:
        conn = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, database="postgres")
    except (OSError, asyncpg.PostgresError) as exc:
        service_missing(f"PostgreSQL on {PG_HOST}:{PG_PORT}", exc)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name


async def drop_pg_database(name: str) -> None:
    conn = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, database="postgres")
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def pg_url(name: str) -> str:
    return f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"


@contextlib.asynccontextmanager
async def fresh_database(kind: str, tmp_path: Path) -> AsyncIterator[str]:
    """A migrated, empty database: an SQLite file, or a fresh PostgreSQL database."""
    if kind == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'tidings.db'}"
        await asyncio.to_thread(migrate.upgrade, url)
        yield url
        return
    name = await create_pg_database()
    url = pg_url(name)
    try:
        await asyncio.to_thread(migrate.upgrade, url)
        yield url
    finally:
        await drop_pg_database(name)


@pytest.fixture(params=["sqlite", "postgres"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A migrated, empty database, once per storage engine."""
    async with fresh_database(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "data_dir": tmp_path / "data",
            "catalog": CATALOG,
            "secret": "test-secret-" + "x" * 32,
            "worker_poll_seconds": 0.05,
            "job_backoff_base_seconds": 0.05,
            "job_backoff_max_seconds": 0.2,
        }
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
def settings(make_settings: Callable[..., Settings], database_url: str) -> Settings:
    return make_settings(database_url=database_url)


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    """The application with its lifespan entered: worker and group commit running."""
    application = create_app(runtime=build_runtime(settings))
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
def runtime(app: FastAPI) -> Runtime:
    """The wired objects of the running application."""
    found: Runtime = app.state.runtime
    return found


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client talking to the app in-process."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://tidings.test") as client:
        yield client


@pytest.fixture
async def api_key(runtime: Runtime) -> str:
    """A producer key that may publish every type and hold every capability scope (users,
    topics, preferences, the dev mailbox) but is not an operator's."""
    _key, plaintext = await runtime.auth.create_key("tests", ["*", *keys.CAPABILITIES])
    return plaintext


@pytest.fixture
def producer(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}


@pytest.fixture
def user_headers(runtime: Runtime) -> Callable[[str], dict[str, str]]:
    def headers(user_id: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {runtime.auth.issue_user_token(user_id)}"}

    return headers


async def eventually(
    check: Callable[[], Awaitable[bool]], *, timeout: float = 10.0, interval: float = 0.02
) -> None:
    """Wait until ``check`` holds; fail with a clear message when it never does."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        if await check():
            return
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"condition not reached within {timeout}s")
        await asyncio.sleep(interval)


@pytest.fixture
def canonical_event() -> Iterator[dict[str, Any]]:
    return {**CANONICAL_EVENT}
