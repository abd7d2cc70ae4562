"""Collapsing in-app items by group key, silent items, and the "seen" lookup."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tidings.app.runtime import Runtime
from tidings.inbox import schemas
from tidings.inbox.storing import OpenGroup
from tidings.kit import tables

Headers = Callable[[str], dict[str, str]]
START = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
ANN = {"id": "u-ann", "name": "Ann"}
CID = {"id": "u-cid", "name": "Cid"}
DEE = {"id": "u-dee", "name": "Dee"}


def at(minute: int) -> dt.datetime:
    return START + dt.timedelta(minutes=minute)


def row(item_id: str, minute: int, *, user: str = "u-bob", **extra: Any) -> dict[str, Any]:
    """An item row as the planner hands it to ``store``."""
    return {
        "id": item_id,
        "user_id": user,
        "tenant": extra.pop("tenant", "acme"),
        "event_id": f"ev-{item_id}",
        "type": "comment.created",
        "category": "comments",
        "title": f"title {item_id}",
        "body": f"body {item_id}",
        "action_url": None,
        "actor": extra.pop("actor", ANN),
        "created_at": at(minute),
        **extra,
    }


def starts(item_id: str, minute: int, key: str = "board:1", **extra: Any) -> dict[str, Any]:
    """A row that starts a group."""
    group: dict[str, Any] = {
        "group_key": key,
        "group_count": 1,
        "group_actors": [extra.get("actor", ANN)],
    }
    return row(item_id, minute, **(group | extra))


async def store(runtime: Runtime, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    async with runtime.db.transaction() as conn:
        return [dict(item) for item in await runtime.inbox.store(conn, rows)]


async def mark(runtime: Runtime, user: str, item_id: str, **flags: bool) -> None:
    await runtime.inbox.mark(user, [item_id], schemas.Marks(**flags))


async def stored(runtime: Runtime, item_id: str) -> dict[str, Any] | None:
    async with runtime.db.reader() as conn:
        found = (
            await conn.execute(
                sa.select(tables.inbox_items).where(tables.inbox_items.c.id == item_id)
            )
        ).first()
    return None if found is None else dict(found._mapping)


async def item_count(runtime: Runtime) -> int:
    async with runtime.db.reader() as conn:
        query = sa.select(sa.func.count()).select_from(tables.inbox_items)
        return int((await conn.execute(query)).scalar_one())


def drain(queue: asyncio.Queue[dict[str, Any]]) -> list[dict[str, Any]]:
    return [queue.get_nowait() for _ in range(queue.qsize())]


async def test_open_groups_finds_the_newest_unread_item_per_key(runtime: Runtime) -> None:
    await store(
        runtime,
        [
            starts("older", 0),
            starts("newer", 1, group_count=4, group_actors=[CID, ANN]),
            starts("read", 2),
            starts("archived", 3, key="board:2"),
            starts("eve", 4, user="u-eve"),
            starts("other-tenant", 5, tenant="globex"),
            row("plain", 6),
        ],
    )
    await mark(runtime, "u-bob", "read", read=True)
    await mark(runtime, "u-bob", "archived", archived=True)
    await mark(runtime, "u-bob", "newer", seen=True)  # seen is still open: only read closes

    keys = [
        ("u-bob", "acme", "board:1"),
        ("u-bob", "acme", "board:2"),
        ("u-eve", "acme", "board:1"),
        ("u-bob", "globex", "board:1"),
        ("u-eve", "globex", "board:1"),
        ("u-zed", "acme", "board:1"),
    ]
    async with runtime.db.transaction() as conn:
        groups = await runtime.inbox.open_groups(conn, keys)

    assert groups == {
        ("u-bob", "acme", "board:1"): OpenGroup(item_id="newer", count=4, actors=[CID, ANN]),
        ("u-eve", "acme", "board:1"): OpenGroup(item_id="eve", count=1, actors=[ANN]),
        ("u-bob", "globex", "board:1"): OpenGroup(item_id="other-tenant", count=1, actors=[ANN]),
    }


async def test_open_groups_answers_for_more_keys_than_one_query_takes(runtime: Runtime) -> None:
    users = [f"u-{n:04d}" for n in range(1234)]
    await store(runtime, [starts(f"i-{user}", 0, user=user) for user in users])
    keys = [(user, "acme", "board:1") for user in users] + [
        (user, "acme", "board:9") for user in users
    ]
    async with runtime.db.transaction() as conn:
        groups = await runtime.inbox.open_groups(conn, keys)
    assert {key: group.item_id for key, group in groups.items()} == {
        (user, "acme", "board:1"): f"i-{user}" for user in users
    }


async def test_a_merge_updates_the_item_and_floats_it_to_the_top(
    runtime: Runtime, client: httpx.AsyncClient, user_headers: Headers
) -> None:
    bob = user_headers("u-bob")
    await store(runtime, [starts("first", 0), row("plain", 1)])
    await mark(runtime, "u-bob", "first", seen=True)

    written = await store(
        runtime,
        [
            row("second", 2, actor=CID, merge_into="first", group_count=2, group_actors=[CID, ANN]),
            row(
                "third",
                3,
                actor=DEE,
                merge_into="first",
                group_count=3,
                group_actors=[DEE, CID, ANN],
            ),
        ],
    )

    assert [(item["id"], item["merged"], item["title"]) for item in written] == [
        ("first", True, "title third")
    ]
    items = (await client.get("/v1/me/inbox", headers=bob)).json()["items"]
    assert [item["id"] for item in items] == ["first", "plain"]
    top, plain = items
    assert top["title"] == "title third"
    assert top["body"] == "body third"
    assert top["event_id"] == "ev-third"
    assert top["actor"] == DEE
    assert top["group"] == {"key": "board:1", "count": 3, "actors": [DEE, CID, ANN]}
    assert dt.datetime.fromisoformat(top["created_at"]) == at(3)
    assert dt.datetime.fromisoformat(top["updated_at"]) == at(3)
    assert top["seen"] is False
    assert top["read"] is False
    assert plain["group"] is None
    assert plain["updated_at"] is None
    assert await item_count(runtime) == 2
    assert (await client.get("/v1/me/inbox/counts", headers=bob)).json() == {
        "unread": 2,
        "unseen": 2,
        "total": 2,
    }


async def test_an_item_started_and_merged_into_in_one_batch_is_returned_once(
    runtime: Runtime,
) -> None:
    written = await store(
        runtime,
        [
            starts("first", 0),
            row("second", 1, actor=CID, merge_into="first", group_count=2, group_actors=[CID, ANN]),
        ],
    )
    assert [(item["id"], item["group_count"]) for item in written] == [("first", 2)]
    found = await stored(runtime, "first")
    assert found is not None
    assert (found["group_count"], found["group_actors"], found["title"]) == (
        2,
        [CID, ANN],
        "title second",
    )
    assert await item_count(runtime) == 1


@pytest.mark.parametrize("closed_by", ["read", "archived", "deleted", "someone_else"])
async def test_merging_into_an_item_that_is_no_longer_open_inserts_a_new_item(
    runtime: Runtime, closed_by: str
) -> None:
    owner = "u-eve" if closed_by == "someone_else" else "u-bob"
    await store(runtime, [starts("first", 0, user=owner)])
    if closed_by in ("read", "archived"):
        await mark(runtime, owner, "first", **{closed_by: True})
    target = "gone" if closed_by == "deleted" else "first"
    before = await stored(runtime, "first")

    written = await store(
        runtime,
        [
            row(
                "second",
                1,
                actor=CID,
                merge_into=target,
                group_key="board:1",
                group_count=2,
                group_actors=[CID, ANN],
            )
        ],
    )

    assert [(item["id"], item["merged"]) for item in written] == [("second", False)]
    assert await stored(runtime, "first") == before
    second = await stored(runtime, "second")
    assert second is not None
    assert (second["user_id"], second["group_key"], second["title"]) == (
        "u-bob",
        "board:1",
        "title second",
    )
    async with runtime.db.transaction() as conn:
        groups = await runtime.inbox.open_groups(conn, [("u-bob", "acme", "board:1")])
    assert groups[("u-bob", "acme", "board:1")].item_id == "second"


async def test_storing_the_same_rows_again_changes_nothing(runtime: Runtime) -> None:
    rows = [starts("first", 0), row("plain", 1)]
    assert {item["id"] for item in await store(runtime, rows)} == {"first", "plain"}
    assert await store(runtime, rows) == []
    assert await item_count(runtime) == 2


async def test_silent_items_are_stored_but_only_counts_are_pushed(runtime: Runtime) -> None:
    async with runtime.live.subscribe("u-bob") as queue:
        written = await store(runtime, [starts("loud", 0), row("quiet", 1, silent=True)])
        await runtime.inbox.announce(written)
        messages = drain(queue)
        assert [(m["event"], m["data"].get("id")) for m in messages] == [
            ("item", "loud"),
            ("counts", None),
        ]
        assert messages[0]["data"]["group"] == {"key": "board:1", "count": 1, "actors": [ANN]}
        assert messages[1]["data"] == {"unread": 2, "unseen": 2, "total": 2}

        quiet_merge = row(
            "second", 2, merge_into="loud", group_count=2, group_actors=[CID, ANN], silent=True
        )
        await runtime.inbox.announce(await store(runtime, [quiet_merge]))
        assert [m["event"] for m in drain(queue)] == ["counts"]

        loud_merge = row("third", 3, merge_into="loud", group_count=3, group_actors=[DEE, CID])
        await runtime.inbox.announce(await store(runtime, [loud_merge]))
        pushed = drain(queue)
        assert [(m["event"], m["data"].get("id")) for m in pushed] == [
            ("item", "loud"),
            ("counts", None),
        ]
        assert pushed[0]["data"]["title"] == "title third"
        assert pushed[0]["data"]["group"]["count"] == 3
    found = await stored(runtime, "quiet")
    assert found is not None
    assert "silent" not in found


async def test_seen_returns_the_items_seen_read_or_archived(runtime: Runtime) -> None:
    await store(
        runtime, [*(row(name, n) for n, name in enumerate(["s", "r", "a", "new"])), starts("m", 4)]
    )
    await mark(runtime, "u-bob", "s", seen=True)
    await mark(runtime, "u-bob", "r", read=True)
    await mark(runtime, "u-bob", "a", archived=True)
    await mark(runtime, "u-bob", "m", seen=True)
    async with runtime.db.transaction() as conn:
        assert await runtime.inbox.seen(conn, ["s", "r", "a", "new", "m", "gone"]) == {
            "s",
            "r",
            "a",
            "m",
        }
    # Something new merged into a seen item makes it unseen again.
    await store(runtime, [row("m2", 9, merge_into="m", group_count=2, group_actors=[ANN])])
    async with runtime.db.transaction() as conn:
        assert await runtime.inbox.seen(conn, ["s", "m"]) == {"s"}
