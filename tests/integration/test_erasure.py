"""Erasure wins over work in flight: nothing accepted before a user was erased reaches
them or keeps their id or address, however planning and delivery interleave with it;
a user created again under the same id hears about what comes after."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.integration.noise_rig import START, Rig, rig, write_catalog
from tidings.kit import tables
from tidings.kit.clock import FrozenClock
from tidings.kit.settings import Settings
from tidings.users.service import pseudonym_of

BATCH = 500
CONTROL = "u-keep"


@pytest.fixture
async def noise(
    make_settings: Callable[..., Settings], database_url: str, tmp_path: Path
) -> AsyncIterator[Rig]:
    settings = make_settings(
        database_url=database_url,
        catalog=write_catalog(tmp_path / "catalog"),
        worker_enabled=False,
    )
    async with rig(settings, FrozenClock(START)) as r:
        _key, secret = await r.runtime.auth.create_key(
            "erasure", ["*", "users:write", "users:erase"]
        )
        r.producer = {"Authorization": f"Bearer {secret}"}
        yield r


async def put_user(noise: Rig, user: str) -> None:
    response = await noise.client.put(
        f"/v1/users/{user}", json={"email": f"{user}@example.com"}, headers=noise.producer
    )
    assert response.status_code == 200, response.text


async def publish_batch(noise: Rig, users: list[str], prefix: str) -> list[str]:
    """A batch of ``ping.unseen`` events (an in-app item now, an email timer for later)."""
    events = [
        {
            "type": "ping.unseen",
            "idempotency_key": f"{prefix}-{i}",
            "actor": {"id": "a-ann", "name": "Ann"},
            "recipients": [{"id": user} for user in users],
            "data": {"ref": f"{prefix}-{i}"},
        }
        for i in range(BATCH)
    ]
    response = await noise.client.post(
        "/v1/events/batch", json={"events": events}, headers=noise.producer
    )
    assert response.status_code == 202, response.text
    return [e["event_id"] for e in response.json()["events"]]


async def erase(noise: Rig, user: str) -> None:
    response = await noise.client.delete(f"/v1/users/{user}", headers=noise.producer)
    assert response.status_code == 204, response.text


async def traces_of(noise: Rig, user: str) -> dict[str, int]:
    """Rows that still name ``user`` or their address, per table."""
    address = f"{user}@example.com"
    found: dict[str, int] = {}
    async with noise.runtime.db.reader() as conn:
        for table in (tables.inbox_items, tables.deliveries):
            count = await conn.execute(
                sa.select(sa.func.count()).select_from(table).where(table.c.user_id == user)
            )
            found[table.name] = count.scalar_one()
        mail = await conn.execute(
            sa.select(sa.func.count())
            .select_from(tables.mailbox)
            .where(tables.mailbox.c.recipient == address)
        )
        found["mailbox"] = mail.scalar_one()
        rows = await conn.execute(sa.select(tables.events.c.recipients))
        found["events"] = sum(user in (row.recipients or ()) for row in rows)
    return found


def untraced() -> dict[str, int]:
    return {
        "inbox_items": 0,
        "deliveries": 0,
        "mailbox": 0,
        "events": 0,
    }


async def inbox_size(noise: Rig, user: str) -> int:
    async with noise.runtime.db.reader() as conn:
        count = await conn.execute(
            sa.select(sa.func.count())
            .select_from(tables.inbox_items)
            .where(tables.inbox_items.c.user_id == user)
        )
        return int(count.scalar_one())


async def mail_count(noise: Rig, user: str) -> int:
    return len(await noise.mail_to(user))


async def test_an_erasure_before_planning_wins_over_the_events_accepted_before_it(
    noise: Rig,
) -> None:
    await put_user(noise, "u-x")
    await put_user(noise, CONTROL)
    await publish_batch(noise, ["u-x", CONTROL], "a")
    await erase(noise, "u-x")
    await noise.drain()
    await noise.advance(minutes=20)  # the emails' unseen wait ends

    assert await traces_of(noise, "u-x") == untraced()
    assert await inbox_size(noise, CONTROL) == BATCH
    assert await mail_count(noise, CONTROL) == BATCH


async def test_an_erasure_racing_planning_and_delivery_leaves_nothing_behind(
    noise: Rig,
) -> None:
    for user in ("u-x", "u-y", CONTROL):
        await put_user(noise, user)
    await publish_batch(noise, ["u-x", "u-y", CONTROL], "b")
    await publish_batch(noise, ["u-x", CONTROL], "c")
    # Planning and the erasure of u-x run side by side, in whatever order they meet.
    await asyncio.gather(noise.drain(), erase(noise, "u-x"))
    await noise.drain()
    # u-y is erased once planned, before the emails' timers fire.
    await erase(noise, "u-y")
    await noise.advance(minutes=20)

    assert await traces_of(noise, "u-x") == untraced()
    assert await traces_of(noise, "u-y") == untraced()
    assert await inbox_size(noise, CONTROL) == 2 * BATCH
    assert await mail_count(noise, CONTROL) == 2 * BATCH
    async with noise.runtime.db.reader() as conn:
        states = await conn.execute(
            sa.select(tables.deliveries.c.state, sa.func.count())
            .where(tables.deliveries.c.user_id == pseudonym_of("u-y"))
            .group_by(tables.deliveries.c.state)
        )
        by_state = {row[0]: row[1] for row in states}
        held = await conn.execute(
            sa.select(sa.func.count())
            .select_from(tables.inbox_items)
            .where(tables.inbox_items.c.user_id.like("erased:%"))
        )
        assert held.scalar_one() == 0
    # u-y's in-app items were written and then erased, and with them the in-app
    # deliveries they stood for; their emails never left.
    assert by_state == {"suppressed": BATCH}


async def test_a_user_created_again_after_an_erasure_hears_about_new_events_only(
    noise: Rig,
) -> None:
    await put_user(noise, "u-x")
    early = await noise.publish("ping.plain", ["u-x"], key="before", ref="before")
    await erase(noise, "u-x")
    noise.clock.advance(1)
    await put_user(noise, "u-x")
    late = await noise.publish("ping.plain", ["u-x"], key="after", ref="after")
    await noise.drain()

    inbox = await noise.inbox("u-x")
    assert [item["event_id"] for item in inbox] == [late]
    early_view: dict[str, Any] = await noise.deliveries(early)
    assert {(user, channel) for user, channel in early_view} == {
        (pseudonym_of("u-x"), "email"),
        (pseudonym_of("u-x"), "in_app"),
    }
    assert {d["reason"] for d in early_view.values()} == {"erased"}
    assert await noise.mail_to("u-x") == ["Ping after"]
