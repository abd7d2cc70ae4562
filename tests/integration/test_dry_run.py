"""Dry run: what the planner would decide for an event, per recipient and channel, with
nothing written and no rule's counter changed. The clock is frozen."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

from tests.integration.noise_rig import START, Rig
from tidings.kit import tables

EVERY_TABLE = [table for table in tables.metadata.sorted_tables if table.name != "alembic_version"]


def ping(
    key: str, users: list[Any], *, type_key: str = "ping.plain", **extra: Any
) -> dict[str, Any]:
    return {
        "type": type_key,
        "idempotency_key": key,
        "recipients": users,
        "data": {"ref": "r-1", "board": "roadmap"},
        **extra,
    }


async def dry_run(noise: Rig, body: dict[str, Any]) -> dict[str, Any]:
    response = await noise.client.post("/v1/events/dry-run", json=body, headers=noise.producer)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def decisions(answer: dict[str, Any]) -> dict[tuple[str, str], tuple[str, str | None]]:
    return {
        (r["user_id"], c["channel"]): (c["decision"], c["reason"])
        for r in answer["recipients"]
        for c in r["channels"]
    }


async def snapshot(noise: Rig) -> dict[str, int]:
    async with noise.runtime.db.reader() as conn:
        return {
            table.name: int(
                (await conn.execute(sa.select(sa.func.count()).select_from(table))).scalar_one()
            )
            for table in EVERY_TABLE
        }


async def test_each_recipient_and_channel_with_nothing_written(noise: Rig) -> None:
    response = await noise.client.put(
        "/v1/users/u-quiet/preferences",
        json={"quiet_hours": {"start": "12:30", "end": "14:00", "timezone": "Europe/Paris"}},
        headers=noise.producer,
    )
    assert response.status_code == 200, response.text
    response = await noise.client.put(
        "/v1/users/u-out/preferences",
        json={"categories": {"updates": {"channels": {"email": False}}}},
        headers=noise.producer,
    )
    assert response.status_code == 200, response.text
    before = await snapshot(noise)
    users = [
        {"id": "u-plain", "email": "plain@example.com"},
        {"id": "u-quiet", "email": "quiet@example.com"},
        {"id": "u-out", "email": "out@example.com"},
        "u-no-address",
    ]
    answer = await dry_run(noise, ping("d1", users))
    assert answer["truncated"] is False
    assert answer["planned_at"] == START.isoformat().replace("+00:00", "Z")
    assert decisions(answer) == {
        ("u-plain", "in_app"): ("deliver", None),
        ("u-plain", "email"): ("deliver", None),
        ("u-quiet", "in_app"): ("deliver", None),
        ("u-quiet", "email"): ("hold", "quiet_hours"),
        ("u-out", "in_app"): ("deliver", None),
        ("u-out", "email"): ("suppress", "opted_out"),
        ("u-no-address", "in_app"): ("deliver", None),
        ("u-no-address", "email"): ("suppress", "no_address"),
    }
    held = next(r for r in answer["recipients"] if r["user_id"] == "u-quiet")["channels"]
    assert {c["channel"]: c["until"] for c in held}["email"] == "2026-01-10T13:00:00Z"
    # Nothing written: not the event, its key, a profile it carried, a job or a row.
    assert await snapshot(noise) == before
    # And the same key still publishes.
    response = await noise.client.post("/v1/events", json=ping("d1", users), headers=noise.producer)
    assert response.status_code == 202, response.text
    assert response.json()["replayed"] is False


async def test_rule_state_is_read_and_never_changed(noise: Rig) -> None:
    await noise.publish("ping.dedup", ["u-1"], key="real-1", ref="r-1")
    await noise.drain()
    again = ping("dry-1", ["u-1"], type_key="ping.dedup")
    for _ in range(2):
        assert decisions(await dry_run(noise, again))[("u-1", "in_app")] == (
            "suppress",
            "deduplicated",
        )
    fresh = {**again, "data": {"ref": "r-2"}}
    for _ in range(3):  # a dry run does not mark r-2 as seen
        assert decisions(await dry_run(noise, fresh))[("u-1", "in_app")] == ("deliver", None)

    throttled = ping("dry-2", ["u-1"], type_key="ping.throttle")
    for _ in range(4):  # the cap is 2 an hour: dry runs do not count
        assert decisions(await dry_run(noise, throttled))[("u-1", "in_app")] == ("deliver", None)

    digest = decisions(await dry_run(noise, ping("dry-3", ["u-1"], type_key="ping.digest")))
    assert digest[("u-1", "in_app")] == ("digest", "digest")


async def test_a_send_at_is_planned_as_at_that_time(noise: Rig) -> None:
    response = await noise.client.put(
        "/v1/users/u-1/preferences",
        json={"quiet_hours": {"start": "21:30", "end": "07:00", "timezone": "Europe/Paris"}},
        headers=noise.producer,
    )
    assert response.status_code == 200, response.text
    user = [{"id": "u-1", "email": "u-1@example.com"}]
    now = decisions(await dry_run(noise, ping("n", user)))
    assert now[("u-1", "email")] == ("deliver", None)  # 13:00 in Paris
    at_ten = (START + dt.timedelta(hours=9)).isoformat()  # 22:00 in Paris
    later = await dry_run(noise, ping("l", user, send_at=at_ten))
    assert later["planned_at"] == at_ten.replace("+00:00", "Z")
    assert decisions(later)[("u-1", "email")] == ("hold", "quiet_hours")


async def test_a_topic_is_planned_for_its_subscribers(noise: Rig) -> None:
    response = await noise.client.put(
        "/v1/topics/board-3/subscribers", json={"user_ids": ["u-a", "u-b"]}, headers=noise.producer
    )
    assert response.status_code == 200, response.text
    body = {"type": "ping.plain", "idempotency_key": "t", "topic": "board-3", "data": {}}
    answer = await dry_run(noise, body)
    assert [r["user_id"] for r in answer["recipients"]] == ["u-a", "u-b"]


async def test_a_dry_run_is_refused_as_a_publish_would_be(noise: Rig) -> None:
    bad = ping("b", ["u-1"], data={"ref": 7})
    response = await noise.client.post("/v1/events/dry-run", json=bad, headers=noise.producer)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == "data.ref"
    _key, outsider = await noise.runtime.auth.create_key("billing", ["billing.*"])
    response = await noise.client.post(
        "/v1/events/dry-run",
        json=ping("b", ["u-1"]),
        headers={"Authorization": f"Bearer {outsider}"},
    )
    assert response.status_code == 403, response.text


async def test_conditions_suppress_per_recipient_and_channel(noise: Rig) -> None:
    users = [
        {"id": "u-fr", "email": "fr@example.com", "locale": "fr"},
        {"id": "u-en", "email": "en@example.com", "locale": "en"},
    ]
    expected = {
        ("u-fr", "in_app"): ("deliver", None),
        ("u-fr", "email"): ("deliver", None),
        ("u-en", "in_app"): ("deliver", None),
        ("u-en", "email"): ("suppress", "condition"),
    }
    assert decisions(await dry_run(noise, ping("c1", users, type_key="ping.when"))) == expected
    event_id = await publish_ping(noise, ping("c1", users, type_key="ping.when"))
    muted = {**ping("c2", users, type_key="ping.when"), "data": {"ref": "muted"}}
    muted_id = await publish_ping(noise, muted)
    await noise.drain()

    response = await noise.client.get(f"/v1/events/{event_id}", headers=noise.producer)
    states = {
        (d["user_id"], d["channel"]): (d["state"], d["reason"])
        for d in response.json()["deliveries"]
    }
    assert states == {
        ("u-fr", "in_app"): ("delivered", None),
        ("u-fr", "email"): ("sent", None),
        ("u-en", "in_app"): ("delivered", None),
        ("u-en", "email"): ("suppressed", "condition"),
    }
    response = await noise.client.get(f"/v1/events/{muted_id}", headers=noise.producer)
    assert {(d["state"], d["reason"]) for d in response.json()["deliveries"]} == {
        ("suppressed", "condition")
    }
    assert await noise.mail_to("u-en") == []
    assert [i["event_id"] for i in await noise.inbox("u-en")] == [event_id]


async def publish_ping(noise: Rig, body: dict[str, Any]) -> str:
    response = await noise.client.post("/v1/events", json=body, headers=noise.producer)
    assert response.status_code == 202, response.text
    event_id: str = response.json()["event_id"]
    return event_id
