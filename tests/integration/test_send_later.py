"""Send later: an event with ``send_at`` is planned for no one before that time, and then
as if it had been published then (quiet hours, preferences, the topic's audience, the
type's maximum age). The clock is frozen and moved by hand."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.integration.noise_rig import START, Rig, write_catalog
from tests.integration.test_timers import running
from tidings.kit import tables
from tidings.kit.clock import FrozenClock
from tidings.kit.settings import Settings


def at(**delta: float) -> str:
    """START moved by ``delta``, as RFC 3339."""
    return (START + dt.timedelta(**delta)).isoformat()


def event(key: str, send_at: Any, *, type_key: str = "ping.plain", **extra: Any) -> dict[str, Any]:
    return {
        "type": type_key,
        "idempotency_key": key,
        "recipients": [{"id": "u-1", "email": "u-1@example.com"}],
        "data": {"ref": key},
        "send_at": send_at,
        **extra,
    }


async def publish(noise: Rig, body: dict[str, Any]) -> str:
    response = await noise.client.post("/v1/events", json=body, headers=noise.producer)
    assert response.status_code == 202, response.text
    event_id: str = response.json()["event_id"]
    return event_id


async def view(noise: Rig, event_id: str) -> dict[str, Any]:
    response = await noise.client.get(f"/v1/events/{event_id}", headers=noise.producer)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_nothing_is_planned_before_send_at_and_everything_at_it(noise: Rig) -> None:
    later = await publish(noise, event("l1", at(hours=2)))
    now = await publish(noise, event("n1", None))
    await noise.drain()

    scheduled = await view(noise, later)
    assert scheduled["status"] == "scheduled"
    assert scheduled["send_at"] == at(hours=2).replace("+00:00", "Z")
    assert scheduled["deliveries"] == []
    assert (await view(noise, now))["status"] == "planned"
    assert [i["event_id"] for i in await noise.inbox("u-1")] == [now]

    await noise.advance(hours=1, minutes=59)
    assert [i["event_id"] for i in await noise.inbox("u-1")] == [now]
    assert await noise.mail_to("u-1") == ["Ping n1"]

    await noise.advance(minutes=1)
    planned = await view(noise, later)
    assert planned["status"] == "planned"
    states = {(d["channel"], d["state"]) for d in planned["deliveries"]}
    assert states == {("in_app", "delivered"), ("email", "sent")}
    inbox = await noise.inbox("u-1")
    assert [i["event_id"] for i in inbox] == [later, now]  # the newest on top
    assert inbox[0]["created_at"].startswith(at(hours=2)[:16])
    assert await noise.mail_to("u-1") == ["Ping n1", "Ping l1"]


async def test_quiet_hours_and_preferences_apply_as_they_are_at_send_time(noise: Rig) -> None:
    quiet = await publish(noise, event("q1", at(hours=9)))  # 22:00 in Paris
    opted = await publish(noise, event("q2", at(hours=1)))
    await noise.drain()
    # Changed after both were accepted, before they are sent.
    response = await noise.client.put(
        "/v1/users/u-1/preferences",
        json={
            "quiet_hours": {"start": "21:30", "end": "07:00", "timezone": "Europe/Paris"},
            "categories": {"updates": {"channels": {"email": False}}},
        },
        headers=noise.producer,
    )
    assert response.status_code == 200, response.text

    await noise.advance(hours=1)
    email = {d["channel"]: d for d in (await view(noise, opted))["deliveries"]}["email"]
    assert (email["state"], email["reason"]) == ("suppressed", "opted_out")

    response = await noise.client.put(
        "/v1/users/u-1/preferences",
        json={
            "quiet_hours": {"start": "21:30", "end": "07:00", "timezone": "Europe/Paris"},
            "categories": {"updates": {"channels": {"email": True}}},
        },
        headers=noise.producer,
    )
    assert response.status_code == 200, response.text
    await noise.advance(hours=8)
    email = {d["channel"]: d for d in (await view(noise, quiet))["deliveries"]}["email"]
    assert (email["state"], email["reason"]) == ("scheduled", "quiet_hours")
    assert email["detail"] == "until 2026-01-11T06:00:00+00:00"  # 07:00 in Paris


async def test_the_maximum_age_counts_from_send_at(noise: Rig) -> None:
    # ping.stale lives 10 minutes: sent 3 hours after it was accepted, it is not stale.
    fresh = await publish(noise, event("s1", at(hours=3), type_key="ping.stale"))
    # A send_at already past is planned now, and its age counts from that time.
    late = await publish(noise, event("s2", at(minutes=-20), type_key="ping.stale"))
    await noise.drain()
    late_view = await view(noise, late)
    assert late_view["status"] == "planned"
    assert {d["reason"] for d in late_view["deliveries"]} == {"stale"}

    await noise.advance(hours=3)
    assert {d["state"] for d in (await view(noise, fresh))["deliveries"]} == {"delivered", "sent"}


async def test_a_topic_event_reaches_who_is_subscribed_at_send_time(noise: Rig) -> None:
    async def subscribe(user: str) -> None:
        response = await noise.client.put(
            "/v1/topics/board-7/subscribers", json={"user_ids": [user]}, headers=noise.producer
        )
        assert response.status_code == 200, response.text

    await subscribe("u-early")
    body = {
        "type": "ping.plain",
        "idempotency_key": "t1",
        "topic": "board-7",
        "data": {"ref": "t1"},
        "send_at": at(hours=1),
    }
    event_id = await publish(noise, body)
    await noise.drain()
    await subscribe("u-late")  # after acceptance, before the send time
    assert await noise.inbox("u-early") == []

    await noise.advance(hours=1)
    assert [i["event_id"] for i in await noise.inbox("u-early")] == [event_id]
    assert [i["event_id"] for i in await noise.inbox("u-late")] == [event_id]


@pytest.mark.parametrize(
    ("send_at", "why"),
    [
        ("2026-01-10T18:00:00", "timezone"),  # no offset: ambiguous
        (at(days=366), "365 days"),
        (at(days=-366), "365 days"),
        ("0001-01-01T00:00:00+14:00", "years 1 to 9999"),
        ("tomorrow", "datetime"),
        (12, "RFC 3339"),  # not a Unix time
    ],
)
async def test_a_send_at_out_of_bounds_is_refused_and_nothing_is_written(
    noise: Rig, send_at: Any, why: str
) -> None:
    response = await noise.client.post(
        "/v1/events", json=event("bad", send_at), headers=noise.producer
    )
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"]["field"].endswith("send_at"), body
    assert why.lower() in response.text.lower(), body

    batch = {"events": [event("ok", None), event("bad", send_at)]}
    response = await noise.client.post("/v1/events/batch", json=batch, headers=noise.producer)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"].startswith("events.1."), response.text
    async with noise.runtime.db.reader() as conn:
        written = (
            await conn.execute(sa.select(sa.func.count()).select_from(tables.events))
        ).scalar()
    assert written == 0


async def test_send_at_is_part_of_the_idempotent_body(noise: Rig) -> None:
    first = await publish(noise, event("k1", at(hours=1)))
    again = await noise.client.post(
        "/v1/events", json=event("k1", at(hours=1)), headers=noise.producer
    )
    assert again.status_code == 202
    assert again.json() == {"event_id": first, "replayed": True}
    moved = await noise.client.post(
        "/v1/events", json=event("k1", at(hours=2)), headers=noise.producer
    )
    assert moved.status_code == 409, moved.text
    assert moved.json()["error"]["field"] == "idempotency_key"


async def test_a_scheduled_event_survives_a_restart(
    make_settings: Callable[..., Settings], database_url: str, tmp_path: Path
) -> None:
    settings = make_settings(database_url=database_url, catalog=write_catalog(tmp_path / "catalog"))
    clock = FrozenClock(START)
    async with running(settings, clock, worker=False) as (runtime, client):
        _key, secret = await runtime.auth.create_key("tests", ["*"])
        headers = {"Authorization": f"Bearer {secret}"}
        response = await client.post("/v1/events", json=event("r1", at(hours=5)), headers=headers)
        assert response.status_code == 202, response.text
        event_id = response.json()["event_id"]

    clock.at += dt.timedelta(hours=5)
    async with running(settings, clock, worker=False) as (runtime, client):
        while await runtime.worker.run_once():
            pass
        response = await client.get(f"/v1/events/{event_id}", headers=headers)
        assert response.json()["status"] == "planned", response.text
        async with runtime.db.reader() as conn:
            items = (
                await conn.execute(
                    sa.select(sa.func.count())
                    .select_from(tables.inbox_items)
                    .where(tables.inbox_items.c.event_id == event_id)
                )
            ).scalar()
        assert items == 1
