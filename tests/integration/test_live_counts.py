"""Live counts after a worker's announcement: the items go out at once, the counts follow
from a task of their own, and the last counts a connection gets are never older than
its last item."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from tests.conftest import eventually
from tidings.app.runtime import Runtime
from tidings.kit import job_context

START = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)


def row(item_id: str, minute: int, user: str = "u-bob") -> dict[str, Any]:
    return {
        "id": item_id,
        "user_id": user,
        "tenant": "acme",
        "event_id": f"ev-{item_id}",
        "type": "comment.created",
        "category": "comments",
        "title": f"title {item_id}",
        "body": f"body {item_id}",
        "action_url": None,
        "actor": {"id": "u-ann", "name": "Ann"},
        "created_at": START + dt.timedelta(minutes=minute),
    }


async def store(runtime: Runtime, *rows: dict[str, Any]) -> list[dict[str, Any]]:
    async with runtime.db.transaction() as conn:
        return [dict(item) for item in await runtime.inbox.store(conn, list(rows))]


def drain(queue: asyncio.Queue[dict[str, Any]]) -> list[dict[str, Any]]:
    messages = []
    while not queue.empty():
        messages.append(queue.get_nowait())
    return messages


async def test_a_jobs_announcement_pushes_the_items_and_leaves_the_counts_to_follow(
    runtime: Runtime,
) -> None:
    async with runtime.live.subscribe("u-bob") as queue:
        written = await store(runtime, row("one", 0))
        with job_context.running("plan", 1):
            await runtime.inbox.announce(written)
        assert [(m["event"], m["data"].get("id")) for m in drain(queue)] == [("item", "one")]

        counts = await asyncio.wait_for(queue.get(), 10)
        assert counts == {"event": "counts", "data": {"unread": 1, "unseen": 1, "total": 1}}


async def test_the_last_counts_after_announcements_in_a_row_count_every_item(
    runtime: Runtime,
) -> None:
    got: dict[str, list[dict[str, Any]]] = {"u-bob": [], "u-cid": []}
    async with (
        runtime.live.subscribe("u-bob") as bob,
        runtime.live.subscribe("u-cid") as cid,
    ):
        with job_context.running("plan", 1):
            for n in range(5):
                written = await store(runtime, row(f"bob-{n}", n), row(f"cid-{n}", n, "u-cid"))
                await runtime.inbox.announce(written)

        async def counting_done() -> bool:
            got["u-bob"] += drain(bob)
            got["u-cid"] += drain(cid)
            task = runtime.inbox._announcements._counting
            return task is not None and task.done()

        await eventually(counting_done)
        for user, messages in got.items():
            items = [m["data"]["id"] for m in messages if m["event"] == "item"]
            assert items == [f"{user[2:]}-{n}" for n in range(5)]
            counts = [m["data"] for m in messages if m["event"] == "counts"]
            # Counted together, fewer times than announced, and last of all with every item.
            assert 1 <= len(counts) <= 5
            assert counts[-1] == {"unread": 5, "unseen": 5, "total": 5}
            assert messages[-1]["event"] == "counts"
