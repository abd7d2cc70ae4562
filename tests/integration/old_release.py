"""Run by the Tidings release before migration 0010, in its own process: fills a database
the way that release's code fills it, and prints what it made as JSON.

    python old_release.py DATABASE_URL DATA_DIR CATALOG NOW_ISO
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sys
from typing import Any

import httpx
import sqlalchemy as sa

# The old release's module paths: this file runs on that release's source tree.
from tidings.app import build_runtime, create_app  # type: ignore[attr-defined]
from tidings.kit import migrate, tables
from tidings.kit.clock import FrozenClock
from tidings.kit.settings import Settings


async def fill(url: str, data_dir: str, catalog: str, now: dt.datetime) -> dict[str, Any]:
    migrate.upgrade(url)
    settings = Settings(
        database_url=url,
        data_dir=data_dir,
        catalog=catalog,
        secret="test-secret-" + "x" * 32,
        worker_poll_seconds=0.05,
    )
    clock = FrozenClock(now)
    runtime = build_runtime(settings, clock=clock)
    app = create_app(runtime=runtime)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://old.test") as client:
            _key, plaintext = await runtime.auth.create_key("old", ["*", "admin"])
            auth = {"Authorization": f"Bearer {plaintext}"}
            for user in ("u-bob", "u-cat"):
                put = await client.put(
                    f"/v1/users/{user}", json={"email": f"{user}@example.com"}, headers=auth
                )
                assert put.status_code == 200, put.text
            # u-cat reads comments in an hourly digest: an entry and a timer wait.
            put = await client.put(
                "/v1/users/u-cat/preferences",
                json={"categories": {"comments": {"digest": {"cadence": "hourly"}}}},
                headers=auth,
            )
            assert put.status_code == 200, put.text
            published = []
            for n, recipients in enumerate((["u-bob"], ["u-bob", "u-cat"], ["u-cat"])):
                event = {
                    "type": "comment.created",
                    "idempotency_key": f"old-{n}",
                    "actor": {"id": "u-ann", "name": "Ann"},
                    "recipients": recipients,
                    "data": {
                        "board": {"id": "b-1", "name": "Roadmap"},
                        "comment": {"id": f"c-{n}", "text": "Looks good"},
                    },
                }
                sent = await client.post("/v1/events", json=event, headers=auth)
                assert sent.status_code == 202, sent.text
                published.append(sent.json()["event_id"])
            for _ in range(400):
                async with runtime.db.reader() as conn:
                    due = await conn.execute(
                        sa.select(sa.func.count())
                        .select_from(tables.jobs)
                        .where(tables.jobs.c.run_at <= clock.now())
                    )
                    planned = await conn.execute(
                        sa.select(sa.func.count())
                        .select_from(tables.events)
                        .where(tables.events.c.planned_at.is_(None))
                    )
                    if due.scalar_one() == 0 and planned.scalar_one() == 0:
                        break
                await asyncio.sleep(0.05)
            else:
                raise RuntimeError("the old release did not finish its work")
        async with runtime.db.reader() as conn:
            d = tables.deliveries.c
            rows = await conn.execute(sa.select(d.id, d.event_id, d.user_id, d.channel, d.state))
            found = [list(row) for row in rows]
            waiting = await conn.execute(sa.select(tables.jobs.c.kind))
            jobs = [row.kind for row in waiting]
    return {"events": published, "deliveries": found, "jobs": jobs, "key": plaintext}


if __name__ == "__main__":
    url, data_dir, catalog, now = sys.argv[1:5]
    made = asyncio.run(fill(url, data_dir, catalog, dt.datetime.fromisoformat(now)))
    print(json.dumps(made))
