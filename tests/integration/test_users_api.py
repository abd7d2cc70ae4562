"""Profiles, erasure, topics and fan-out."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.conftest import eventually
from tidings.app.runtime import Runtime
from tidings.kit import tables
from tidings.kit.settings import Settings


async def test_profile_round_trip(client: httpx.AsyncClient, producer: dict[str, str]) -> None:
    profile = {
        "email": "ann@example.com",
        "name": "Ann",
        "locale": "fr-CA",
        "timezone": "America/Toronto",
    }
    put = await client.put("/v1/users/u-ann", json=profile, headers=producer)
    assert put.status_code == 200
    got = (await client.get("/v1/users/u-ann", headers=producer)).json()
    assert {k: got[k] for k in profile} == profile
    replaced = await client.put("/v1/users/u-ann", json={"name": "Ann B."}, headers=producer)
    assert replaced.json()["email"] is None
    assert replaced.json()["name"] == "Ann B."


async def test_bad_profile_names_the_field(
    client: httpx.AsyncClient, producer: dict[str, str]
) -> None:
    response = await client.put(
        "/v1/users/u-ann", json={"timezone": "Nowhere/Land"}, headers=producer
    )
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "timezone"


async def test_a_locale_longer_than_the_profile_keeps_is_refused_naming_it(
    client: httpx.AsyncClient, producer: dict[str, str]
) -> None:
    """A well-formed tag of 36 characters passed the pattern and failed PostgreSQL's
    column (500); it is a 422 on both engines, in a profile and in an event."""
    long_tag = "en-" + "-".join(["abcdefgh"] * 3) + "-abcdef"
    assert len(long_tag) == 36
    response = await client.put("/v1/users/u-ann", json={"locale": long_tag}, headers=producer)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == "locale"
    event = {
        "type": "comment.created",
        "idempotency_key": "long-locale",
        "recipients": [{"id": "u-ann", "locale": long_tag}],
        "data": {"board": {"id": "b", "name": "B"}, "comment": {"id": "c", "text": "t"}},
    }
    published = await client.post("/v1/events", json=event, headers=producer)
    assert published.status_code == 422, published.text
    assert published.json()["error"]["field"].endswith("locale")
    kept = await client.put(
        "/v1/users/u-ann", json={"locale": long_tag[:35].rstrip("-")}, headers=producer
    )
    assert kept.status_code == 200, kept.text


async def test_unknown_user_is_404(client: httpx.AsyncClient, producer: dict[str, str]) -> None:
    assert (await client.get("/v1/users/nobody", headers=producer)).status_code == 404
    assert (await client.delete("/v1/users/nobody", headers=producer)).status_code == 404


async def test_users_api_needs_a_key(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v1/users/u-ann")).status_code == 401


async def test_delete_erases_inbox_subscriptions_and_personal_data(
    client: httpx.AsyncClient,
    producer: dict[str, str],
    runtime: Runtime,
    canonical_event: dict[str, Any],
    user_headers: Any,
) -> None:
    await client.put(
        "/v1/topics/board:1/subscribers", json={"user_ids": ["u-bob"]}, headers=producer
    )
    event_id = (await client.post("/v1/events", json=canonical_event, headers=producer)).json()[
        "event_id"
    ]

    async def delivered() -> bool:
        items = (await client.get("/v1/me/inbox", headers=user_headers("u-bob"))).json()["items"]
        return len(items) == 1

    await eventually(delivered)
    assert (await client.delete("/v1/users/u-bob", headers=producer)).status_code == 204

    assert (await client.get("/v1/users/u-bob", headers=producer)).status_code == 404
    assert (await client.get("/v1/me/inbox", headers=user_headers("u-bob"))).json()["items"] == []
    subscribers = (await client.get("/v1/topics/board:1/subscribers", headers=producer)).json()
    assert subscribers["items"] == []
    view = (await client.get(f"/v1/events/{event_id}", headers=producer)).json()
    assert "u-bob" not in str(view)
    assert view["deliveries"][0]["user_id"].startswith("erased:")
    async with runtime.db.reader() as conn:
        for table in (
            tables.deliveries,
            tables.inbox_items,
            tables.subscriptions,
        ):
            found = await conn.execute(
                sa.select(sa.func.count()).select_from(table).where(table.c.user_id == "u-bob")
            )
            assert found.scalar_one() == 0, table.name


async def test_subscribers_are_paginated(
    client: httpx.AsyncClient, producer: dict[str, str]
) -> None:
    users = [f"u-{i:03d}" for i in range(25)]
    added = await client.put(
        "/v1/topics/board:9/subscribers", json={"user_ids": users}, headers=producer
    )
    assert added.json() == {"topic": "board:9", "changed": 25}
    again = await client.put(
        "/v1/topics/board:9/subscribers", json={"user_ids": users[:5]}, headers=producer
    )
    assert again.json()["changed"] == 0
    listed: list[str] = []
    cursor = None
    while True:
        params = {"limit": 10} | ({"cursor": cursor} if cursor else {})
        page = (
            await client.get("/v1/topics/board:9/subscribers", params=params, headers=producer)
        ).json()
        listed += [s["user_id"] for s in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert listed == users
    removed = await client.request(
        "DELETE", "/v1/topics/board:9/subscribers", json={"user_ids": users[:10]}, headers=producer
    )
    assert removed.json()["changed"] == 10


async def test_bad_topic_is_a_clear_error(
    client: httpx.AsyncClient, producer: dict[str, str]
) -> None:
    response = await client.put(
        "/v1/topics/bad topic!/subscribers", json={"user_ids": ["u"]}, headers=producer
    )
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "topic"


@pytest.fixture
def settings(make_settings: Any, database_url: str) -> Settings:
    # Small pages so a modest topic takes several fan-out jobs.
    return make_settings(database_url=database_url, topic_page_size=7)


async def test_topic_event_fans_out_page_by_page_to_every_subscriber(
    client: httpx.AsyncClient,
    producer: dict[str, str],
    runtime: Runtime,
    canonical_event: dict[str, Any],
) -> None:
    users = [f"u-{i:03d}" for i in range(30)]
    await client.put("/v1/topics/board:1/subscribers", json={"user_ids": users}, headers=producer)
    event = {k: v for k, v in canonical_event.items() if k != "recipients"} | {"topic": "board:1"}
    event_id = (await client.post("/v1/events", json=event, headers=producer)).json()["event_id"]

    async def planned() -> bool:
        view = (await client.get(f"/v1/events/{event_id}", headers=producer)).json()
        return bool(view["status"] == "planned")

    await eventually(planned)
    async with runtime.db.reader() as conn:
        rows = await conn.execute(
            sa.select(tables.inbox_items.c.user_id).where(tables.inbox_items.c.event_id == event_id)
        )
        delivered = sorted(r.user_id for r in rows)
    assert delivered == users
    view = (
        await client.get(f"/v1/events/{event_id}", params={"limit": 1000}, headers=producer)
    ).json()
    # One in-app and one email delivery each; these subscribers have no address on file.
    assert len(view["deliveries"]) == 60
    assert {(d["channel"], d["state"]) for d in view["deliveries"]} == {
        ("in_app", "delivered"),
        ("email", "suppressed"),
    }
