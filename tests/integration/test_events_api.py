"""The producer's events API, on SQLite and on PostgreSQL."""

from __future__ import annotations

import copy
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.conftest import eventually
from tidings.app.runtime import Runtime
from tidings.kit import tables


async def count(runtime: Runtime, table: sa.Table) -> int:
    async with runtime.db.reader() as conn:
        return int((await conn.execute(sa.select(sa.func.count()).select_from(table))).scalar_one())


async def test_canonical_event_is_accepted_and_planned(
    client: httpx.AsyncClient, producer: dict[str, str], canonical_event: dict[str, Any]
) -> None:
    response = await client.post("/v1/events", json=canonical_event, headers=producer)
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["replayed"] is False
    event_id = body["event_id"]

    async def planned() -> bool:
        view = await client.get(f"/v1/events/{event_id}", headers=producer)
        return bool(view.json()["status"] == "planned")

    await eventually(planned)
    view = (await client.get(f"/v1/events/{event_id}", headers=producer)).json()
    assert view["type"] == "comment.created"
    assert view["recipients"] == ["u-bob"]
    by_channel = {d["channel"]: d for d in view["deliveries"]}
    assert set(by_channel) == {"in_app", "email"}
    in_app = by_channel["in_app"]
    assert (in_app["user_id"], in_app["state"]) == ("u-bob", "delivered")
    assert [t["state"] for t in in_app["transitions"]] == ["planned", "delivered"]
    assert by_channel["email"]["state"] in ("scheduled", "sent")


async def test_recipient_profile_fields_are_recorded(
    client: httpx.AsyncClient, producer: dict[str, str], canonical_event: dict[str, Any]
) -> None:
    await client.post("/v1/events", json=canonical_event, headers=producer)
    profile = await client.get("/v1/users/u-bob", headers=producer)
    assert profile.status_code == 200
    assert profile.json()["email"] == "bob@example.com"


async def test_same_key_same_body_replays_the_original(
    client: httpx.AsyncClient,
    producer: dict[str, str],
    canonical_event: dict[str, Any],
    runtime: Runtime,
) -> None:
    first = (await client.post("/v1/events", json=canonical_event, headers=producer)).json()
    again = await client.post("/v1/events", json=canonical_event, headers=producer)
    assert again.status_code == 202
    assert again.json() == {"event_id": first["event_id"], "replayed": True}
    assert await count(runtime, tables.events) == 1


async def test_same_key_other_body_is_a_conflict(
    client: httpx.AsyncClient,
    producer: dict[str, str],
    canonical_event: dict[str, Any],
    runtime: Runtime,
) -> None:
    first = (await client.post("/v1/events", json=canonical_event, headers=producer)).json()
    changed = copy.deepcopy(canonical_event)
    changed["data"]["comment"]["text"] = "Changed my mind"
    response = await client.post("/v1/events", json=changed, headers=producer)
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "conflict"
    assert error["field"] == "idempotency_key"
    assert error["event_id"] == first["event_id"]
    assert await count(runtime, tables.events) == 1


async def test_keys_are_scoped_per_tenant(
    client: httpx.AsyncClient, producer: dict[str, str], canonical_event: dict[str, Any]
) -> None:
    first = (await client.post("/v1/events", json=canonical_event, headers=producer)).json()
    other = {**canonical_event, "tenant": "acme"}
    second = (await client.post("/v1/events", json=other, headers=producer)).json()
    assert second["event_id"] != first["event_id"]
    assert second["replayed"] is False


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda e: e["data"]["comment"].update(text=5), "data.comment.text"),
        (lambda e: e["data"].pop("comment"), "data.comment"),
        (lambda e: e.pop("idempotency_key"), "idempotency_key"),
        (lambda e: e.update(type="no.such_type"), "type"),
        (lambda e: e.update(recipients=[]), "recipients"),
        (lambda e: e.update(topic="board:1"), "recipients"),
        (lambda e: e.pop("recipients"), "recipients"),
        (
            lambda e: e.update(recipients=[{"id": "u-x", "timezone": "Mars/Olympus"}]),
            "recipients.0.timezone",
        ),
        (
            lambda e: e.update(recipients=[{"id": "u-x", "email": "not-an-address"}]),
            "recipients.0.email",
        ),
        (lambda e: e.update(colour="blue"), "colour"),
        (lambda e: e.update(actor={"name": "Ann"}), "actor.id"),
    ],
)
async def test_bad_events_get_a_422_naming_the_field(
    client: httpx.AsyncClient,
    producer: dict[str, str],
    canonical_event: dict[str, Any],
    runtime: Runtime,
    change: Any,
    field: str,
) -> None:
    event = copy.deepcopy(canonical_event)
    change(event)
    response = await client.post("/v1/events", json=event, headers=producer)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == field
    assert error["message"]
    assert error["code"]
    assert await count(runtime, tables.events) == 0
    assert await count(runtime, tables.jobs) == 0


async def test_malformed_json_is_a_clear_error(
    client: httpx.AsyncClient, producer: dict[str, str]
) -> None:
    response = await client.post(
        "/v1/events",
        content=b'{"type": "comment.created",',
        headers={**producer, "content-type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "malformed_json"


async def test_without_a_key_is_401(
    client: httpx.AsyncClient, canonical_event: dict[str, Any]
) -> None:
    for headers in ({}, {"Authorization": "Bearer tdg_nope_nope"}, {"Authorization": "Basic x"}):
        response = await client.post("/v1/events", json=canonical_event, headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthenticated"


async def test_a_key_publishes_only_its_types(
    client: httpx.AsyncClient, runtime: Runtime, canonical_event: dict[str, Any]
) -> None:
    _key, plaintext = await runtime.auth.create_key("mentions-team", ["mention.*"])
    headers = {"Authorization": f"Bearer {plaintext}"}
    response = await client.post("/v1/events", json=canonical_event, headers=headers)
    assert response.status_code == 403
    assert response.json()["error"] == {
        "code": "forbidden",
        "message": "The key 'mentions-team' may publish mention.*, not 'comment.created'.",
        "field": "type",
    }
    mention = {
        "type": "mention.created",
        "idempotency_key": "m-1",
        "recipients": ["u-bob"],
        "actor": {"id": "u-ann", "name": "Ann"},
        "data": (await _example(runtime, "mention.created")),
    }
    assert (await client.post("/v1/events", json=mention, headers=headers)).status_code == 202


async def test_revoked_key_stops_working(
    client: httpx.AsyncClient, runtime: Runtime, canonical_event: dict[str, Any]
) -> None:
    key, plaintext = await runtime.auth.create_key("temp", ["*"])
    headers = {"Authorization": f"Bearer {plaintext}"}
    assert (
        await client.post("/v1/events", json=canonical_event, headers=headers)
    ).status_code == 202
    await runtime.auth.revoke_key(key.id)
    assert (
        await client.post("/v1/events", json=canonical_event, headers=headers)
    ).status_code == 401


async def test_batch_is_accepted_whole(
    client: httpx.AsyncClient,
    producer: dict[str, str],
    canonical_event: dict[str, Any],
    runtime: Runtime,
) -> None:
    events = [
        {**canonical_event, "idempotency_key": f"b-{i}", "recipients": [f"u-{i}"]}
        for i in range(50)
    ]
    response = await client.post("/v1/events/batch", json={"events": events}, headers=producer)
    assert response.status_code == 202, response.text
    accepted = response.json()["events"]
    assert len({a["event_id"] for a in accepted}) == 50

    async def all_delivered() -> bool:
        return await count(runtime, tables.inbox_items) == 50

    await eventually(all_delivered)
    replay = await client.post("/v1/events/batch", json={"events": events}, headers=producer)
    assert [a["event_id"] for a in replay.json()["events"]] == [a["event_id"] for a in accepted]
    assert all(a["replayed"] for a in replay.json()["events"])


async def test_batch_with_one_bad_event_writes_nothing(
    client: httpx.AsyncClient,
    producer: dict[str, str],
    canonical_event: dict[str, Any],
    runtime: Runtime,
) -> None:
    events = [copy.deepcopy({**canonical_event, "idempotency_key": f"b-{i}"}) for i in range(5)]
    events[3]["data"]["comment"]["text"] = 42
    response = await client.post("/v1/events/batch", json={"events": events}, headers=producer)
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "events.3.data.comment.text"
    assert await count(runtime, tables.events) == 0


async def test_batch_with_a_conflicting_key_writes_nothing(
    client: httpx.AsyncClient,
    producer: dict[str, str],
    canonical_event: dict[str, Any],
    runtime: Runtime,
) -> None:
    await client.post("/v1/events", json=canonical_event, headers=producer)
    changed = copy.deepcopy(canonical_event)
    changed["data"]["comment"]["text"] = "other"
    events = [{**canonical_event, "idempotency_key": "new-1"}, changed]
    response = await client.post("/v1/events/batch", json={"events": events}, headers=producer)
    assert response.status_code == 409
    assert response.json()["error"]["field"] == "events.1.idempotency_key"
    assert await count(runtime, tables.events) == 1


async def test_batch_over_the_limit_is_refused(
    client: httpx.AsyncClient, producer: dict[str, str], canonical_event: dict[str, Any]
) -> None:
    events = [{**canonical_event, "idempotency_key": f"b-{i}"} for i in range(1001)]
    response = await client.post("/v1/events/batch", json={"events": events}, headers=producer)
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "events"


async def test_oversized_body_is_413(
    client: httpx.AsyncClient,
    producer: dict[str, str],
    canonical_event: dict[str, Any],
    runtime: Runtime,
) -> None:
    event = copy.deepcopy(canonical_event)
    event["data"]["comment"]["text"] = "x" * (runtime.settings.max_body_bytes + 10)
    response = await client.post("/v1/events", json=event, headers=producer)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "too_large"
    assert await count(runtime, tables.events) == 0


async def test_unknown_event_is_404(client: httpx.AsyncClient, producer: dict[str, str]) -> None:
    response = await client.get("/v1/events/nope", headers=producer)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


async def test_openapi_is_published(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    assert "/v1/events" in spec["paths"]
    assert "/v1/me/inbox" in spec["paths"]


async def _example(runtime: Runtime, key: str) -> dict[str, Any]:
    ntype = runtime.catalog.get(key)
    assert ntype is not None
    assert ntype.example is not None
    return dict(ntype.example)


async def test_batch_may_name_the_same_recipient_with_profile_fields_twice(
    client: httpx.AsyncClient, producer: dict[str, str], canonical_event: dict[str, Any]
) -> None:
    events = [
        {**canonical_event, "idempotency_key": "p-1", "recipients": [{"id": "u-bob", "name": "B"}]},
        {
            **canonical_event,
            "idempotency_key": "p-2",
            "recipients": [{"id": "u-bob", "email": "bob@new.example"}],
        },
    ]
    response = await client.post("/v1/events/batch", json={"events": events}, headers=producer)
    assert response.status_code == 202, response.text
    profile = (await client.get("/v1/users/u-bob", headers=producer)).json()
    assert (profile["name"], profile["email"]) == ("B", "bob@new.example")
