"""The example catalog shows collapsing: likes of one comment from four people make one
inbox item, "Ann and 3 others liked your comment on Roadmap"."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import sqlalchemy as sa

from tests.conftest import eventually
from tidings.app.runtime import Runtime
from tidings.kit import tables

ACTORS = [("u-cid", "Cid"), ("u-dee", "Dee"), ("u-eve", "Eve"), ("u-ann", "Ann")]


async def in_app_done(runtime: Runtime, count: int) -> bool:
    every = tables.every_delivery()
    async with runtime.db.reader() as conn:
        found = await conn.execute(
            sa.select(sa.func.count())
            .select_from(every)
            .where(every.c.channel == "in_app", every.c.state == "delivered")
        )
        return int(found.scalar_one()) == count


async def test_four_likes_from_different_people_make_one_item(
    client: httpx.AsyncClient,
    producer: dict[str, str],
    runtime: Runtime,
    user_headers: Callable[[str], dict[str, str]],
) -> None:
    for number, (actor_id, name) in enumerate(ACTORS, start=1):
        response = await client.post(
            "/v1/events",
            json={
                "type": "comment.liked",
                "idempotency_key": f"like-{actor_id}",
                "actor": {"id": actor_id, "name": name},
                "recipients": ["u-bob"],
                "data": {
                    "board": {"id": "b-1", "name": "Roadmap"},
                    "comment": {"id": "c-1", "text": "Looks good"},
                },
            },
            headers=producer,
        )
        assert response.status_code == 202, response.text
        # One at a time, so that Ann's is the newest.
        await eventually(lambda number=number: in_app_done(runtime, number))

    inbox = await client.get("/v1/me/inbox", headers=user_headers("u-bob"))
    assert inbox.status_code == 200
    [item] = inbox.json()["items"]
    assert item["title"] == "Ann and 3 others liked your comment on Roadmap"
    assert item["group"]["count"] == 4
    assert [actor["name"] for actor in item["group"]["actors"]] == ["Ann", "Eve", "Dee", "Cid"]
