"""How long until a large topic's event shows in a subscriber's badge, fanned out on write
and on read (broadcast), on PostgreSQL; and how fast a topic's emails are planned.

One process (API and worker, the database queue), a fresh PostgreSQL database per run:
``--subscribers`` users, all subscribed to one topic (COPYed in, then ANALYZEd; not
timed), then one ``comment.created`` event (in-app and email) to it.

- badge (users without an address, so that no email is sent meanwhile: their email
  deliveries are planned and suppressed): from the POST to ``GET /v1/me/inbox/counts``
  of the LAST subscriber in fan-out order showing it (polled every 20 ms), then its
  first page listing it; and to the event being planned (every page);
- planning rate (users with an address): the fan-out jobs of the event run one after
  the other by this script, with no worker (nothing is sent), recipients / seconds.

    .venv/bin/python scripts/broadcast_latency.py --subscribers 100000
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from tidings.app.asgi import create_app
from tidings.app.runtime import Runtime
from tidings.app.wiring import build_runtime
from tidings.auth import keys
from tidings.events.service import FANOUT_JOB
from tidings.inbox.broadcasts import Broadcasts
from tidings.kit import migrate, tables
from tidings.kit.queue import Job
from tidings.kit.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
PG = "postgresql+asyncpg://postgres@127.0.0.1:5432/"
TOPIC = "board:big"
EVENT = {
    "type": "comment.created",
    "idempotency_key": "big-1",
    "topic": TOPIC,
    "actor": {"id": "u-ann", "name": "Ann"},
    "data": {"board": {"id": "b-1", "name": "Roadmap"}, "comment": {"id": "c-1", "text": "Hi"}},
}


async def fresh_database(subscribers: int, *, emails: bool) -> str:
    name = f"tidings_bcast_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(host="127.0.0.1", user="postgres", database="postgres")
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    await asyncio.to_thread(migrate.upgrade, PG + name)
    conn = await asyncpg.connect(host="127.0.0.1", user="postgres", database=name)
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    users = [f"u-{i:07d}" for i in range(subscribers)]
    await conn.copy_records_to_table(
        "users",
        records=[(u, f"{u}@example.com" if emails else None, now, now) for u in users],
        columns=["id", "email", "created_at", "updated_at"],
    )
    await conn.copy_records_to_table(
        "subscriptions",
        records=[(TOPIC, u, now) for u in users],
        columns=["topic", "user_id", "created_at"],
    )
    await conn.execute("INSERT INTO topics (key, created_at) VALUES ($1, $2)", TOPIC, now)
    await conn.execute("ANALYZE")
    await conn.close()
    return name


async def drop_database(name: str) -> None:
    admin = await asyncpg.connect(host="127.0.0.1", user="postgres", database="postgres")
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()


def runtime_for(name: str, data: Path, on_read: bool, *, worker: bool) -> Runtime:
    settings = Settings(
        database_url=PG + name,
        data_dir=data,
        catalog=ROOT / "catalog",
        secret="bench-secret-" + "x" * 32,
        worker_enabled=worker,
        worker_poll_seconds=0.05,
        rate_limit_per_second=0,
    )
    runtime = build_runtime(settings)
    if on_read:
        runtime.inbox.broadcasts = Broadcasts(
            runtime.db,
            runtime.clock,
            runtime.live,
            runtime.preferences,
            runtime.users,
            min_subscribers=10_000,
        )
    return runtime


async def shows(client: httpx.AsyncClient, user: dict[str, str], start: float) -> float:
    """Seconds from ``start`` until the user's badge counts one unread item."""
    for _ in range(100_000):
        counts = (await client.get("/v1/me/inbox/counts", headers=user)).json()
        if counts["unread"] >= 1:
            break
        await asyncio.sleep(0.02)
    return time.perf_counter() - start


async def badge(subscribers: int, on_read: bool) -> dict[str, float]:
    name = await fresh_database(subscribers, emails=False)
    try:
        with tempfile.TemporaryDirectory() as data:
            runtime = runtime_for(name, Path(data), on_read, worker=True)
            app = create_app(runtime=runtime)
            async with app.router.lifespan_context(app):
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                    _key, secret = await runtime.auth.create_key("bench", ["*", *keys.CAPABILITIES])
                    last = f"u-{subscribers - 1:07d}"
                    user = {"Authorization": f"Bearer {runtime.auth.issue_user_token(last)}"}
                    start = time.perf_counter()
                    response = await client.post(
                        "/v1/events", json=EVENT, headers={"Authorization": f"Bearer {secret}"}
                    )
                    assert response.status_code == 202, response.text
                    event_id = response.json()["event_id"]
                    shown = await shows(client, user, start)
                    page = (await client.get("/v1/me/inbox", headers=user)).json()["items"]
                    assert page[0]["event_id"] == event_id
                    listed = time.perf_counter() - start
                    async with runtime.db.reader() as conn:
                        events = tables.events
                        while True:
                            planned = (
                                (await conn.execute(events.select().where(events.c.id == event_id)))
                                .one()
                                .planned_at
                            )
                            if planned is not None:
                                break
                            await asyncio.sleep(0.1)
                            await conn.rollback()
                    done = time.perf_counter() - start
        return {"badge_s": shown, "first_page_s": listed, "planned_s": done}
    finally:
        await drop_database(name)


async def planning_rate(subscribers: int, on_read: bool) -> dict[str, float]:
    """The event's fan-out jobs run here one after the other: no worker, nothing sent."""
    name = await fresh_database(subscribers, emails=True)
    try:
        with tempfile.TemporaryDirectory() as data:
            runtime = runtime_for(name, Path(data), on_read, worker=False)
            app = create_app(runtime=runtime)
            async with app.router.lifespan_context(app):
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                    _key, secret = await runtime.auth.create_key("bench", ["*"])
                    response = await client.post(
                        "/v1/events", json=EVENT, headers={"Authorization": f"Bearer {secret}"}
                    )
                    assert response.status_code == 202, response.text
                jobs = tables.jobs
                start = time.perf_counter()
                pages = 0
                while True:
                    async with runtime.db.reader() as conn:
                        row = (
                            await conn.execute(jobs.select().where(jobs.c.kind == FANOUT_JOB))
                        ).first()
                    if row is None:
                        break
                    job = Job(row.id, row.kind, dict(row.payload), row.lane, 1)
                    await runtime.pipeline.fanout([job])
                    pages += 1
                seconds = time.perf_counter() - start
        return {"plan_s": seconds, "pages": pages, "recipients_per_s": subscribers / seconds}
    finally:
        await drop_database(name)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    results: list[tuple[str, str, dict[str, Any]]] = []
    for _run in range(args.runs):
        for on_read in (False, True):
            mode = "on read" if on_read else "on write"
            results.append((mode, "badge", await badge(args.subscribers, on_read)))
            results.append((mode, "planning", await planning_rate(args.subscribers, on_read)))
            print(*results[-2:], sep="\n", flush=True)
    for mode, what, figures in results:
        shown = ", ".join(f"{key} {value:,.2f}" for key, value in figures.items())
        print(f"{args.subscribers:,} subscribers, fan-out {mode}, {what}: {shown}")


if __name__ == "__main__":
    asyncio.run(main())
