"""Cancel: every delivery of an event not sent yet is suppressed with reason
``cancelled``, what was not planned yet is planned for no one, what was delivered stays;
a delivery racing its cancellation ends sent or cancelled, never both. The clock is
frozen and moved by hand."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.noise_rig import START, Rig
from tidings.delivery import cancellation


def state(delivery: dict[str, Any]) -> tuple[str, str | None]:
    return delivery["state"], delivery["reason"]


async def cancel(noise: Rig, event_id: str, status: int = 200) -> dict[str, Any]:
    response = await noise.client.post(f"/v1/events/{event_id}/cancel", headers=noise.producer)
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    return body


async def view(noise: Rig, event_id: str) -> dict[str, Any]:
    response = await noise.client.get(f"/v1/events/{event_id}", headers=noise.producer)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def publish(noise: Rig, body: dict[str, Any], headers: dict[str, str] | None = None) -> str:
    response = await noise.client.post("/v1/events", json=body, headers=headers or noise.producer)
    assert response.status_code == 202, response.text
    event_id: str = response.json()["event_id"]
    return event_id


def ping(key: str, *, type_key: str = "ping.plain", **extra: Any) -> dict[str, Any]:
    return {
        "type": type_key,
        "idempotency_key": key,
        "recipients": [{"id": "u-1", "email": "u-1@example.com"}],
        "data": {"ref": key, "board": "roadmap"},
        **extra,
    }


async def test_an_event_cancelled_before_its_send_time_is_planned_for_no_one(noise: Rig) -> None:
    later = (START + dt.timedelta(hours=1)).isoformat()
    event_id = await publish(noise, ping("s1", send_at=later))
    await noise.drain()
    answer = await cancel(noise, event_id)
    assert answer["events"] == [
        {
            "event_id": event_id,
            "cancelled_at": START.isoformat().replace("+00:00", "Z"),
            "suppressed": 0,
            "in_flight": 0,
        }
    ]
    await noise.advance(hours=2)
    found = await view(noise, event_id)
    assert found["status"] == "cancelled"
    assert found["deliveries"] == []
    assert await noise.inbox("u-1") == []
    assert await noise.mail_to("u-1") == []


async def test_what_waits_is_stopped_and_what_was_delivered_stays(noise: Rig) -> None:
    response = await noise.client.put(
        "/v1/users/u-1/preferences",
        json={"quiet_hours": {"start": "12:30", "end": "14:00", "timezone": "Europe/Paris"}},
        headers=noise.producer,
    )
    assert response.status_code == 200, response.text
    quiet = await publish(noise, ping("q1"))  # 13:00 in Paris: the email waits
    delayed = await publish(noise, ping("d1", type_key="ping.delay"))  # both channels wait
    unseen = await publish(noise, ping("u1", type_key="ping.unseen"))  # email if unseen
    await noise.drain()

    for event_id, stopped in ((quiet, 1), (delayed, 2), (unseen, 1)):
        [done] = (await cancel(noise, event_id))["events"]
        assert (done["suppressed"], done["in_flight"]) == (stopped, 0), event_id
    again = await cancel(noise, delayed)
    assert again["events"][0]["suppressed"] == 0  # idempotent

    quiet_view = {d["channel"]: d for d in (await view(noise, quiet))["deliveries"]}
    assert state(quiet_view["in_app"]) == ("delivered", None)
    assert state(quiet_view["email"]) == ("suppressed", "cancelled")
    assert quiet_view["email"]["transitions"][-1]["stage"] == "api"
    delayed_view = {d["channel"]: d for d in (await view(noise, delayed))["deliveries"]}
    assert {state(d) for d in delayed_view.values()} == {("suppressed", "cancelled")}

    await noise.advance(hours=2)
    assert [i["event_id"] for i in await noise.inbox("u-1")] == [unseen, quiet]
    assert await noise.mail_to("u-1") == []


async def test_a_digest_goes_without_the_cancelled_event(noise: Rig) -> None:
    kept = await publish(noise, ping("g1", type_key="ping.digest"))
    dropped = await publish(noise, ping("g2", type_key="ping.digest"))
    await noise.drain()
    assert (await cancel(noise, dropped))["events"][0]["suppressed"] >= 1
    await noise.advance(hours=1)
    assert await noise.mail_to("u-1") != []
    assert {state(d) for d in (await view(noise, dropped))["deliveries"]} == {
        ("suppressed", "cancelled")
    }
    digest = await noise.client.get("/v1/me/inbox", headers=noise.user_headers("u-1"))
    titles = [item["title"] for item in digest.json()["items"]]
    assert titles, digest.text
    assert "1 pings on roadmap" in titles, titles  # one ping, not two
    assert any(
        d["state"] in ("digested", "delivered") for d in (await view(noise, kept))["deliveries"]
    )


async def test_a_cancellation_key_cancels_only_the_events_its_api_key_published(
    noise: Rig,
) -> None:
    _key, other_secret = await noise.runtime.auth.create_key("other team", ["ping.*"])
    other = {"Authorization": f"Bearer {other_secret}"}
    later = (START + dt.timedelta(hours=1)).isoformat()
    mine = [
        await publish(noise, ping(f"c{n}", cancellation_key="remind-7", send_at=later))
        for n in range(2)
    ]
    theirs = await publish(noise, ping("t1", cancellation_key="remind-7", send_at=later), other)
    response = await noise.client.post(
        "/v1/events/cancel", json={"cancellation_key": "remind-7"}, headers=noise.producer
    )
    assert response.status_code == 200, response.text
    assert sorted(e["event_id"] for e in response.json()["events"]) == sorted(mine)
    none = await noise.client.post(
        "/v1/events/cancel", json={"cancellation_key": "never-used"}, headers=noise.producer
    )
    assert none.json() == {"events": [], "more": False}

    await noise.advance(hours=1)
    assert [i["event_id"] for i in await noise.inbox("u-1")] == [theirs]
    assert (await view(noise, theirs))["cancellation_key"] == "remind-7"


async def test_who_may_cancel(noise: Rig) -> None:
    event_id = await publish(noise, ping("w1", type_key="ping.delay"))
    await noise.drain()
    _key, outsider_secret = await noise.runtime.auth.create_key("billing", ["billing.*"])
    outsider = {"Authorization": f"Bearer {outsider_secret}"}
    response = await noise.client.post(f"/v1/events/{event_id}/cancel", headers=outsider)
    assert response.status_code == 403, response.text
    assert response.json()["error"]["field"] == "authorization"
    # Refused: nothing was stopped.
    assert {state(d) for d in (await view(noise, event_id))["deliveries"]} == {
        ("scheduled", "delayed")
    }
    missing = await noise.client.post("/v1/events/no-such-event/cancel", headers=noise.producer)
    assert missing.status_code == 404, missing.text
    assert missing.json()["error"]["code"] == "not_found"
    bad = await noise.client.post(
        "/v1/events/cancel", json={"cancellation_key": ""}, headers=noise.producer
    )
    assert bad.status_code == 422, bad.text
    assert bad.json()["error"]["field"] == "cancellation_key"


async def test_a_topic_event_cancelled_before_its_time_fans_out_to_no_one(noise: Rig) -> None:
    response = await noise.client.put(
        "/v1/topics/board-9/subscribers", json={"user_ids": ["u-1", "u-2"]}, headers=noise.producer
    )
    assert response.status_code == 200, response.text
    body = {
        "type": "ping.plain",
        "idempotency_key": "topic-1",
        "topic": "board-9",
        "data": {"ref": "x"},
        "send_at": (START + dt.timedelta(minutes=30)).isoformat(),
    }
    event_id = await publish(noise, body)
    await cancel(noise, event_id)
    await noise.advance(hours=1)
    assert (await view(noise, event_id))["status"] == "cancelled"
    assert await noise.inbox("u-1") == []
    assert await noise.inbox("u-2") == []


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(head_start=st.integers(min_value=0, max_value=150))
async def test_a_cancellation_racing_a_firing_timer_ends_sent_or_cancelled_never_both(
    noise: Rig, head_start: int
) -> None:
    """The timer fires (a worker sends the delayed email) while the event is cancelled;
    ``head_start`` turns of the event loop go to the worker before the cancel starts: on
    PostgreSQL some runs cancel while the email is being handed over (``in_flight``), and
    it ends sent; a cancellation that did not wait for the claim fails this test."""
    key = f"race-{noise.clock.at.timestamp()}-{head_start}"
    event_id = await publish(noise, ping(key, type_key="ping.delay"))
    await noise.drain()
    noise.clock.at += dt.timedelta(minutes=5)

    async def cancel_soon() -> dict[str, Any]:
        for _ in range(head_start):
            await asyncio.sleep(0)
        return await cancel(noise, event_id)

    async def fire() -> None:
        while await noise.runtime.worker.run_once():
            pass

    _fired, answer = await asyncio.gather(fire(), cancel_soon())
    await noise.drain()
    deliveries = {d["channel"]: d for d in (await view(noise, event_id))["deliveries"]}
    mailed = [s for s in await noise.mail_to("u-1") if s == f"Ping {key}"]
    email = deliveries["email"]
    if state(email) == ("suppressed", "cancelled"):
        assert mailed == []
    else:
        assert email["state"] == "sent", email
        assert mailed == [f"Ping {key}"]
        assert "cancelled" not in {t["reason"] for t in email["transitions"]}
    in_app = deliveries["in_app"]
    shown = [i for i in await noise.inbox("u-1") if i["event_id"] == event_id]
    if state(in_app) == ("suppressed", "cancelled"):
        assert shown == []
    else:
        assert in_app["state"] == "delivered", in_app
        assert len(shown) == 1
    [done] = answer["events"]
    # Left to its sender (claimed when the cancel came), it was sent; else it had been
    # sent before the cancel, or was cancelled.
    assert done["in_flight"] in (0, 1)
    if done["in_flight"]:
        assert email["state"] == "sent"
    stopped = sum(state(d) == ("suppressed", "cancelled") for d in deliveries.values())
    assert done["suppressed"] == stopped
    noise.clock.at += dt.timedelta(minutes=1)


async def test_a_cancellation_key_cancels_a_bounded_number_per_call(
    noise: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cancellation, "PER_CALL", 2)
    later = (START + dt.timedelta(hours=1)).isoformat()
    published = {
        await publish(noise, ping(f"b{n}", cancellation_key="bulk", send_at=later))
        for n in range(5)
    }
    cancelled: set[str] = set()
    calls = []
    while True:
        response = await noise.client.post(
            "/v1/events/cancel", json={"cancellation_key": "bulk"}, headers=noise.producer
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert len(body["events"]) <= 2
        cancelled |= {e["event_id"] for e in body["events"]}
        calls.append(body["more"])
        if not body["more"]:
            break
    assert calls == [True, True, False]
    assert cancelled == published
    for event_id in published:
        assert (await view(noise, event_id))["status"] == "cancelled"


async def test_many_deliveries_are_stopped_a_page_at_a_time(
    noise: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cancellation, "PAGE", 2)
    users = [{"id": f"u-{n}", "email": f"u-{n}@example.com"} for n in range(3)]
    body = {**ping("p1", type_key="ping.delay"), "recipients": users}
    event_id = await publish(noise, body)
    await noise.drain()
    [done] = (await cancel(noise, event_id))["events"]
    assert (done["suppressed"], done["in_flight"]) == (6, 0)  # 3 people, 2 channels
    await noise.advance(minutes=10)
    found = await view(noise, event_id)
    assert {(d["state"], d["reason"]) for d in found["deliveries"]} == {("suppressed", "cancelled")}
    for n in range(3):
        assert await noise.inbox(f"u-{n}") == []
