"""Timelines: one delivery with every transition (when, which stage and attempt, why),
and an operator's list of a user's recent deliveries."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from tests.integration.noise_rig import START, Rig
from tidings.email import feedback


async def key_headers(noise: Rig, *scopes: str) -> dict[str, str]:
    _key, plaintext = await noise.runtime.auth.create_key("scoped", list(scopes))
    return {"Authorization": f"Bearer {plaintext}"}


def steps(timeline: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [(t["state"], t["reason"], t["stage"], t["attempt"]) for t in timeline["transitions"]]


async def test_a_deferred_then_sent_email_shows_each_step_with_stage_and_attempt(
    noise: Rig,
) -> None:
    response = await noise.client.put(
        "/v1/users/u-1/preferences",
        json={"quiet_hours": {"start": "12:30", "end": "14:00", "timezone": "Europe/Paris"}},
        headers=noise.producer,
    )
    assert response.status_code == 200, response.text
    event_id = await noise.publish("ping.plain", ["u-1"], key="q1", ref="r1")
    await noise.drain()
    email_id = (await noise.deliveries(event_id))[("u-1", "email")]["id"]

    held = (await noise.client.get(f"/v1/deliveries/{email_id}", headers=noise.producer)).json()
    assert (held["type"], held["event_id"], held["channel"]) == ("ping.plain", event_id, "email")
    # Still as planned: its row is its first state, which names the stage, not the
    # attempt of the job that planned it.
    assert steps(held) == [
        ("planned", None, "plan", None),
        ("scheduled", "quiet_hours", "plan", None),
    ]
    assert held["transitions"][1]["detail"] == "until 2026-01-10T13:00:00+00:00"

    await noise.advance(hours=1)
    sent = (await noise.client.get(f"/v1/deliveries/{email_id}", headers=noise.producer)).json()
    assert sent["state"] == "sent"
    assert sent["provider"] == "catcher"
    assert steps(sent)[-1] == ("sent", None, "email", 1)
    assert sent["transitions"][-1]["at"].startswith("2026-01-10T13:00")

    # The event's view carries the same stages and attempts.
    view = await noise.deliveries(event_id)
    assert [(t["state"], t["stage"]) for t in view[("u-1", "email")]["transitions"]] == [
        ("planned", "plan"),
        ("scheduled", "plan"),
        ("sent", "email"),
    ]
    assert [(t["state"], t["stage"]) for t in view[("u-1", "in_app")]["transitions"]] == [
        ("planned", "plan"),
        ("delivered", "plan"),
    ]


async def test_a_deduplicated_delivery_names_the_key_it_repeated(noise: Rig) -> None:
    await noise.publish("ping.dedup", ["u-1"], key="d1", ref="order-7")
    again = await noise.publish("ping.dedup", ["u-1"], key="d2", ref="order-7")
    await noise.drain()
    repeat = (await noise.deliveries(again))[("u-1", "in_app")]
    assert (repeat["state"], repeat["reason"]) == ("suppressed", "deduplicated")
    timeline = (
        await noise.client.get(f"/v1/deliveries/{repeat['id']}", headers=noise.producer)
    ).json()
    last = timeline["transitions"][-1]
    assert last["reason"] == "deduplicated"
    assert "'order-7'" in last["detail"]
    assert "0:10:00" in last["detail"]


async def test_a_bounce_is_recorded_as_feedback_with_the_providers_words(noise: Rig) -> None:
    event_id = await noise.publish("ping.plain", ["u-1"], key="b1", ref="r1")
    await noise.drain()
    email = (await noise.deliveries(event_id))[("u-1", "email")]
    assert email["state"] == "sent"
    await noise.runtime.feedback.record(
        [
            feedback.Feedback(
                feedback.FeedbackKind.HARD_BOUNCE,
                "u-1@example.com",
                provider="ses",
                message_id=email["message_id"],
                detail="550 5.1.1 mailbox unknown",
            )
        ]
    )
    timeline = (
        await noise.client.get(f"/v1/deliveries/{email['id']}", headers=noise.producer)
    ).json()
    last = timeline["transitions"][-1]
    assert (last["state"], last["reason"], last["stage"]) == ("bounced", "hard_bounce", "feedback")
    assert last["detail"] == "550 5.1.1 mailbox unknown"


async def test_a_key_reads_only_the_types_it_covers_and_operators_read_all(noise: Rig) -> None:
    event_id = await noise.publish("ping.plain", ["u-1"], key="k1", ref="r1")
    await noise.drain()
    delivery_id = (await noise.deliveries(event_id))[("u-1", "in_app")]["id"]
    other = await key_headers(noise, "comment.*")
    for path in (f"/v1/deliveries/{delivery_id}", f"/v1/events/{event_id}"):
        refused = await noise.client.get(path, headers=other)
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "forbidden"
    operator = await key_headers(noise, "admin")
    assert (await noise.client.get(f"/v1/deliveries/{delivery_id}", headers=operator)).is_success
    assert (await noise.client.get(f"/v1/events/{event_id}", headers=operator)).is_success
    missing = await noise.client.get("/v1/deliveries/nope", headers=noise.producer)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    anonymous = await noise.client.get(f"/v1/deliveries/{delivery_id}")
    assert anonymous.status_code == 401


async def test_a_users_deliveries_newest_first_filtered_and_paged(noise: Rig) -> None:
    events = []
    for n in range(3):
        events.append(await noise.publish("ping.plain", ["u-1", "u-2"], key=f"p{n}", ref=f"r{n}"))
        await noise.drain()
        await noise.advance(minutes=1)
    await noise.publish("ping.dedup", ["u-2"], key="other", ref="x")
    await noise.drain()
    path = "/v1/users/u-1/deliveries"

    refused = await noise.client.get(path, headers=noise.producer)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "forbidden"

    operator = await key_headers(noise, "admin")

    async def listed(**params: Any) -> list[dict[str, Any]]:
        response = await noise.client.get(path, params=params, headers=operator)
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    everything = await listed()
    assert len(everything) == 6
    assert [d["event_id"] for d in everything[::2]] == events[::-1]
    assert all(d["user_id"] == "u-1" and d["transitions"] for d in everything)
    created = [d["created_at"] for d in everything]
    assert created == sorted(created, reverse=True)

    assert {d["channel"] for d in await listed(channel="email")} == {"email"}
    assert len(await listed(channel="email")) == 3
    assert [d["state"] for d in await listed(state="delivered")] == ["delivered"] * 3
    assert await listed(type="ping.dedup") == []
    assert len(await listed(type="ping.plain")) == 6
    since = (START + dt.timedelta(minutes=1)).isoformat()
    until = (START + dt.timedelta(minutes=2)).isoformat()
    assert {d["event_id"] for d in await listed(since=since)} == set(events[1:])
    assert {d["event_id"] for d in await listed(since=since, until=until)} == {events[1]}
    other_user = await noise.client.get(
        "/v1/users/u-2/deliveries", params={"type": "ping.dedup"}, headers=operator
    )
    assert [d["user_id"] for d in other_user.json()["items"]] == ["u-2", "u-2"]

    paged: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 4}
        if cursor:
            params["cursor"] = cursor
        page = (await noise.client.get(path, params=params, headers=operator)).json()
        paged.extend(d["id"] for d in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert paged == [d["id"] for d in everything]

    bad = await noise.client.get(path, params={"cursor": "nonsense"}, headers=operator)
    assert bad.status_code == 422
    assert bad.json()["error"]["field"] == "cursor"
    backwards = await noise.client.get(
        path, params={"since": until, "until": since}, headers=operator
    )
    assert backwards.status_code == 422


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("since", "0001-01-01T00:00:00+14:00"),
        ("until", "9999-12-31T23:59:59-14:00"),
    ],
)
async def test_a_time_outside_the_years_once_in_utc_is_a_422_on_its_field(
    noise: Rig, field: str, value: str
) -> None:
    operator = await key_headers(noise, "admin")
    response = await noise.client.get(
        "/v1/users/u-1/deliveries", params={field: value}, headers=operator
    )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == field
    assert "UTC" in error["message"]
