"""Payload values long enough to make a rendered in-app field longer than its column:
the event is accepted, and the item reaches the inbox on both engines (PostgreSQL
refused the row and the event's planning ended in the dead letters)."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from tests.conftest import eventually


async def test_an_item_whose_link_and_title_render_too_long_still_reaches_the_inbox(
    client: httpx.AsyncClient,
    producer: dict[str, str],
    user_headers: Callable[[str], dict[str, str]],
) -> None:
    event = {
        "type": "comment.created",
        "idempotency_key": "long-render",
        "actor": {"id": "u-ann", "name": "Ann"},
        "recipients": ["u-bob"],
        "data": {
            "board": {"id": "b" * 3000, "name": "N" * 3000},
            "comment": {"id": "c-1", "text": "Hi"},
        },
    }
    published = await client.post("/v1/events", json=event, headers=producer)
    assert published.status_code == 202, published.text

    async def in_inbox() -> bool:
        inbox = await client.get("/v1/me/inbox", headers=user_headers("u-bob"))
        return bool(inbox.json()["items"])

    await eventually(in_inbox)
    [item] = (await client.get("/v1/me/inbox", headers=user_headers("u-bob"))).json()["items"]
    assert item["title"].startswith("Ann commented on NNN")
    assert len(item["title"]) == 500
    assert item["action_url"] is None
