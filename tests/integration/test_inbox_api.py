"""The end user's inbox API: list, paginate, count, flag; one user never sees another's."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import sqlalchemy as sa

from tests.conftest import eventually
from tidings.app.runtime import Runtime
from tidings.kit import tables

Headers = Callable[[str], dict[str, str]]


async def publish(
    client: httpx.AsyncClient,
    producer: dict[str, str],
    runtime: Runtime,
    template: dict[str, Any],
    recipients: list[str],
    n: int,
    prefix: str = "e",
) -> list[str]:
    events = [
        {
            **template,
            "idempotency_key": f"{prefix}-{i}",
            "recipients": recipients,
            "data": {
                "board": {"id": "b-1", "name": f"Board {i}"},
                "comment": {"id": f"c-{i}", "text": f"text {i}"},
            },
        }
        for i in range(n)
    ]
    response = await client.post("/v1/events/batch", json={"events": events}, headers=producer)
    assert response.status_code == 202, response.text
    expected = n * len(recipients)

    async def delivered() -> bool:
        async with runtime.db.reader() as conn:
            query = (
                sa.select(sa.func.count())
                .select_from(tables.inbox_items)
                .where(
                    tables.inbox_items.c.event_id.in_(
                        [e["event_id"] for e in response.json()["events"]]
                    )
                )
            )
            return int((await conn.execute(query)).scalar_one()) == expected

    await eventually(delivered)
    return [e["event_id"] for e in response.json()["events"]]


async def test_pages_walk_every_item_newest_first(
    client: httpx.AsyncClient,
    producer: dict[str, str],
    runtime: Runtime,
    canonical_event: dict[str, Any],
    user_headers: Headers,
) -> None:
    await publish(client, producer, runtime, canonical_event, ["u-bob"], 45)
    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        params = {"limit": 10} | ({"cursor": cursor} if cursor else {})
        page = (
            await client.get("/v1/me/inbox", params=params, headers=user_headers("u-bob"))
        ).json()
        seen.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 45
    assert len({item["id"] for item in seen}) == 45
    keys = [(item["created_at"], item["id"]) for item in seen]
    assert keys == sorted(keys, reverse=True)
    assert {item["title"] for item in seen} == {f"Ann commented on Board {i}" for i in range(45)}


async def test_counts_and_flags(
    client: httpx.AsyncClient,
    producer: dict[str, str],
    runtime: Runtime,
    canonical_event: dict[str, Any],
    user_headers: Headers,
) -> None:
    bob = user_headers("u-bob")
    await publish(client, producer, runtime, canonical_event, ["u-bob"], 5)
    assert (await client.get("/v1/me/inbox/counts", headers=bob)).json() == {
        "unread": 5,
        "unseen": 5,
        "total": 5,
    }
    items = (await client.get("/v1/me/inbox", headers=bob)).json()["items"]

    one = await client.patch(f"/v1/me/inbox/{items[0]['id']}", json={"read": True}, headers=bob)
    assert one.status_code == 200
    assert one.json()["read"] is True
    assert one.json()["read_at"] is not None

    many = await client.post(
        "/v1/me/inbox/mark", json={"ids": [i["id"] for i in items[:3]], "read": True}, headers=bob
    )
    assert many.json()["changed"] == 2  # the first was read already
    assert many.json()["counts"]["unread"] == 2

    unread = (await client.get("/v1/me/inbox", params={"status": "unread"}, headers=bob)).json()
    assert {i["id"] for i in unread["items"]} == {i["id"] for i in items[3:]}

    all_seen = await client.post("/v1/me/inbox/mark", json={"seen": True}, headers=bob)
    assert all_seen.json()["changed"] == 5
    assert all_seen.json()["counts"] == {"unread": 2, "unseen": 0, "total": 5}

    archived = await client.patch(
        f"/v1/me/inbox/{items[4]['id']}", json={"archived": True}, headers=bob
    )
    assert archived.json()["archived"] is True
    counts = (await client.get("/v1/me/inbox/counts", headers=bob)).json()
    assert counts == {"unread": 1, "unseen": 0, "total": 4}
    in_archive = (await client.get("/v1/me/inbox", params={"archived": True}, headers=bob)).json()
    assert [i["id"] for i in in_archive["items"]] == [items[4]["id"]]

    back = await client.patch(f"/v1/me/inbox/{items[0]['id']}", json={"read": False}, headers=bob)
    assert back.json()["read"] is False
    assert (await client.get("/v1/me/inbox/counts", headers=bob)).json()["unread"] == 2


async def test_a_page_can_carry_the_counts_in_the_same_answer(
    client: httpx.AsyncClient,
    producer: dict[str, str],
    runtime: Runtime,
    canonical_event: dict[str, Any],
    user_headers: Headers,
) -> None:
    bob = user_headers("u-bob")
    await publish(client, producer, runtime, canonical_event, ["u-bob"], 4)
    await publish(client, producer, runtime, canonical_event, ["u-eve"], 2, prefix="eve")
    plain = (await client.get("/v1/me/inbox", headers=bob)).json()
    assert plain["counts"] is None
    first = plain["items"][0]["id"]
    await client.patch(f"/v1/me/inbox/{first}", json={"read": True}, headers=bob)

    page = await client.get(
        "/v1/me/inbox", params={"status": "unread", "limit": 2, "counts": "true"}, headers=bob
    )
    assert page.status_code == 200, page.text
    body = page.json()
    assert len(body["items"]) == 2
    assert not any(item["read"] for item in body["items"])
    assert body["next_cursor"] is not None
    # Bob's counts (Eve's two items are not his), the same as the badge's own answer.
    assert body["counts"] == {"unread": 3, "unseen": 4, "total": 4}
    assert body["counts"] == (await client.get("/v1/me/inbox/counts", headers=bob)).json()

    wrong = await client.get("/v1/me/inbox", params={"counts": "maybe"}, headers=bob)
    assert wrong.status_code == 422
    assert wrong.json()["error"]["field"] == "counts"


async def test_no_flags_is_a_clear_error(client: httpx.AsyncClient, user_headers: Headers) -> None:
    response = await client.post("/v1/me/inbox/mark", json={}, headers=user_headers("u-bob"))
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid"


async def test_one_user_cannot_read_or_change_another_users_inbox(
    client: httpx.AsyncClient,
    producer: dict[str, str],
    runtime: Runtime,
    canonical_event: dict[str, Any],
    user_headers: Headers,
) -> None:
    await publish(client, producer, runtime, canonical_event, ["u-bob"], 2)
    bob, eve = user_headers("u-bob"), user_headers("u-eve")
    items = (await client.get("/v1/me/inbox", headers=bob)).json()["items"]
    assert (await client.get("/v1/me/inbox", headers=eve)).json()["items"] == []
    target = items[0]["id"]
    assert (await client.get(f"/v1/me/inbox/{target}", headers=eve)).status_code == 404
    assert (
        await client.patch(f"/v1/me/inbox/{target}", json={"read": True}, headers=eve)
    ).status_code == 404
    changed = await client.post(
        "/v1/me/inbox/mark", json={"ids": [target], "archived": True}, headers=eve
    )
    assert changed.json()["changed"] == 0
    marked_all = await client.post("/v1/me/inbox/mark", json={"read": True}, headers=eve)
    assert marked_all.json()["changed"] == 0
    assert (await client.get("/v1/me/inbox/counts", headers=bob)).json()["unread"] == 2


async def test_user_endpoints_need_a_valid_user_token(
    client: httpx.AsyncClient, producer: dict[str, str], runtime: Runtime
) -> None:
    assert (await client.get("/v1/me/inbox")).status_code == 401
    # A producer's API key is not a user token.
    assert (await client.get("/v1/me/inbox", headers=producer)).status_code == 403
    forged = runtime.auth.issue_user_token("u-bob") + "x"
    response = await client.get("/v1/me/inbox", headers={"Authorization": f"Bearer {forged}"})
    assert response.status_code == 401
    assert response.json()["error"]["field"] == "token"


async def test_a_bad_cursor_is_a_clear_error(
    client: httpx.AsyncClient, user_headers: Headers
) -> None:
    response = await client.get(
        "/v1/me/inbox", params={"cursor": "%%%"}, headers=user_headers("u-bob")
    )
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "cursor"
