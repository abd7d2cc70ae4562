"""Migration 0010 on a database filled by the release before it, running its own code:
the notifications table folds into the deliveries, timelines read the same, and work that
release left waiting (a digest window) finishes under the new code."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.ext.asyncio import create_async_engine

from tests.conftest import ROOT, create_pg_database, drop_pg_database, eventually, pg_url
from tidings.app.asgi import create_app
from tidings.app.wiring import build_runtime
from tidings.kit import migrate
from tidings.kit.clock import FrozenClock
from tidings.kit.settings import Settings

NOW = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC)
MIGRATION = "src/tidings/kit/migrations/versions/0010_lean_deliveries.py"


def git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True)
    return done.stdout.strip()


@pytest.fixture(scope="module")
def old_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The source tree of the commit before migration 0010 was added."""
    added = git("log", "--diff-filter=A", "--format=%H", "-1", "--", MIGRATION)
    before = f"{added}^" if added else "HEAD"
    target = tmp_path_factory.mktemp("old-release")
    archive = subprocess.run(
        ["git", "archive", before, "src", "catalog"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    assert not (target / MIGRATION).exists(), "the old release already has migration 0010"
    return target


@pytest.fixture(params=["sqlite", "postgres"])
async def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
        return
    name = await create_pg_database()
    try:
        yield pg_url(name)
    finally:
        await drop_pg_database(name)


def fill_with_old_release(old: Path, url: str, data_dir: Path) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(old / "src")}
    probe = subprocess.run(
        [sys.executable, "-c", "import tidings; print(tidings.__file__)"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.startswith(str(old)), f"the old release is not the one imported: {probe}"
    done = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).with_name("old_release.py")),
            url,
            str(data_dir),
            str(old / "catalog"),
            NOW.isoformat(),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    made: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return made


async def rows(url: str, query: str) -> list[tuple[Any, ...]]:
    engine = create_async_engine(url, poolclass=sa.NullPool)
    try:
        async with engine.connect() as conn:
            return [tuple(row) for row in await conn.execute(sa.text(query))]
    finally:
        await engine.dispose()


async def test_0010_keeps_what_the_old_release_wrote_and_finishes_its_waiting_work(
    old_release: Path,
    empty_database: str,
    tmp_path: Path,
    make_settings: Callable[..., Settings],
) -> None:
    url = empty_database
    made = await asyncio.to_thread(fill_with_old_release, old_release, url, tmp_path / "old")
    old_deliveries = {d[0]: d for d in made["deliveries"]}
    # u-bob: two events, in-app and email each; u-cat: two events gathered for a digest.
    assert len(old_deliveries) == 8
    waiting = {d[0] for d in made["deliveries"] if d[4] == "scheduled" and d[2] == "u-cat"}
    assert waiting, "the old release left no digest waiting"
    assert "digest" in made["jobs"]
    old_transitions = await rows(url, "SELECT count(*) FROM delivery_transitions")

    await asyncio.to_thread(migrate.upgrade, url)

    assert await rows(url, "SELECT count(*) FROM deliveries WHERE type IS NULL") == [(0,)]
    assert await rows(url, "SELECT count(*) FROM delivery_transitions") == old_transitions
    clock = FrozenClock(NOW)
    settings = make_settings(database_url=url, catalog=old_release / "catalog")
    application = create_app(runtime=build_runtime(settings, clock=clock))
    async with application.router.lifespan_context(application):
        runtime = application.state.runtime
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://t.test") as client:
            auth = {"Authorization": f"Bearer {made['key']}"}
            # Timelines read what the old release wrote, with the type it kept apart.
            for delivery_id, event_id, user_id, channel, state in made["deliveries"]:
                got = await client.get(f"/v1/deliveries/{delivery_id}", headers=auth)
                assert got.status_code == 200, got.text
                body = got.json()
                assert (body["type"], body["event_id"], body["user_id"]) == (
                    "comment.created",
                    event_id,
                    user_id,
                )
                assert body["channel"] == channel
                assert body["transitions"][0]["state"] == "planned"
                assert body["transitions"][-1]["state"] == state
            mine = await client.get("/v1/users/u-bob/deliveries", headers=auth)
            assert mine.status_code == 200, mine.text
            assert len(mine.json()["items"]) == 4

            # The digest window the old release opened closes under the new code: the
            # deliveries it gathered, named by their old ids, move to digested.
            clock.advance(2 * 3600)
            runtime.queue.wake()

            async def digested() -> bool:
                found = await rows(
                    url,
                    "SELECT id, state FROM deliveries WHERE user_id = 'u-cat'",
                )
                states = dict(found)
                return all(states[d] == "digested" for d in waiting)

            await eventually(digested, timeout=30)

            # An old idempotency key still answers with its event; a new event plans once.
            replay = await client.post(
                "/v1/events",
                json={
                    "type": "comment.created",
                    "idempotency_key": "old-0",
                    "actor": {"id": "u-ann", "name": "Ann"},
                    "recipients": ["u-bob"],
                    "data": {
                        "board": {"id": "b-1", "name": "Roadmap"},
                        "comment": {"id": "c-0", "text": "Looks good"},
                    },
                },
                headers=auth,
            )
            assert replay.status_code == 202, replay.text
            assert replay.json()["event_id"] == made["events"][0]

    # Down to 0009 rebuilds a notification per (event, recipient); up again folds them.
    await asyncio.to_thread(command.downgrade, migrate.alembic_config(url), "0009")
    pairs = await rows(url, "SELECT count(DISTINCT notification_id) FROM deliveries")
    assert await rows(url, "SELECT count(*) FROM notifications") == pairs
    assert await rows(url, "SELECT count(*) FROM notifications WHERE type = ''") == [(0,)]
    await asyncio.to_thread(migrate.upgrade, url)
    assert await rows(url, "SELECT count(*) FROM deliveries WHERE type IS NULL") == [(0,)]
