"""What an erasure leaves behind is bounded: status webhook messages about the user no
longer carry their id, whether still waiting or already in the log, and a recorded
erasure is forgotten once no event it could concern waits to be planned."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.integration.noise_rig import START, Rig, rig, write_catalog
from tests.integration.test_client import free_port, serving
from tests.integration.test_webhooks import Receiver
from tidings.kit import tables
from tidings.kit.clock import FrozenClock
from tidings.kit.settings import Settings
from tidings.operations.retention import ERASURES_KEPT
from tidings.users.service import pseudonym_of

WEBHOOK_LANE = {3}
OTHER_LANES = {0, 1, 2}


@pytest.fixture
async def noise(
    make_settings: Callable[..., Settings], database_url: str, tmp_path: Path
) -> AsyncIterator[Rig]:
    settings = make_settings(
        database_url=database_url,
        catalog=write_catalog(tmp_path / "catalog"),
        worker_enabled=False,
        webhooks_allow_private=True,
    )
    async with rig(settings, FrozenClock(START)) as r:
        yield r


async def run_lanes(noise: Rig, lanes: set[int]) -> None:
    while await noise.runtime.worker.run_once(lanes):
        pass


async def erase(noise: Rig, user: str) -> int:
    response = await noise.client.delete(f"/v1/users/{user}", headers=noise.producer)
    assert response.status_code in (204, 404), response.text
    return response.status_code


async def logged_user_ids(noise: Rig, endpoint_id: str) -> list[Any]:
    response = await noise.client.get(
        f"/v1/webhooks/{endpoint_id}/messages", params={"limit": 100}, headers=noise.producer
    )
    assert response.status_code == 200, response.text
    return [m["payload"]["data"]["user_id"] for m in response.json()["items"]]


async def test_webhook_messages_about_an_erased_user_carry_only_the_pseudonym(
    noise: Rig,
) -> None:
    receiver = Receiver()
    async with serving(receiver, free_port()) as url:
        response = await noise.client.post(
            "/v1/webhooks", json={"url": f"{url}/hooks"}, headers=noise.producer
        )
        assert response.status_code == 201, response.text
        endpoint = response.json()
        await noise.publish("ping.plain", ["u-gone", "u-stay"], key="w1", ref="r")
        await noise.drain()  # planned, delivered, and the first messages sent
        sent_before = len(receiver.requests)
        assert sent_before > 0
        await noise.publish("ping.plain", ["u-gone", "u-stay"], key="w2", ref="r")
        await run_lanes(noise, OTHER_LANES)  # its messages wait in the webhook lane
        waiting = await logged_user_ids(noise, endpoint["id"])
        assert "u-gone" in waiting[: len(waiting) - sent_before]

        assert await erase(noise, "u-gone") == 204
        # The log (sent and waiting messages alike) names the user by their pseudonym.
        logged = await logged_user_ids(noise, endpoint["id"])
        assert "u-gone" not in logged
        assert logged.count(pseudonym_of("u-gone")) == waiting.count("u-gone")
        assert "u-stay" in logged

        await run_lanes(noise, WEBHOOK_LANE)
        after = [json.loads(body) for _headers, body in receiver.requests[sent_before:]]
        assert after, "the waiting messages are still sent"
        assert {p["data"]["user_id"] for p in after} == {"u-stay", pseudonym_of("u-gone")}
        assert all(b"u-gone" not in body for _headers, body in receiver.requests[sent_before:])


async def erasure_rows(noise: Rig) -> set[str]:
    async with noise.runtime.db.reader() as conn:
        return {row[0] for row in await conn.execute(sa.select(tables.erasures.c.pseudonym))}


async def test_an_erasure_is_forgotten_once_no_event_it_covers_waits_to_be_planned(
    noise: Rig,
) -> None:
    # An id never stored: a 404, recorded all the same (its events may be on their way).
    assert await erase(noise, "never-was") == 404
    # An id an event accepted later waits for (the worker has not planned it).
    noise.clock.at = START + dt.timedelta(minutes=1)
    waiting = await noise.publish("ping.plain", ["u-late"], key="late", ref="r")
    await erase(noise, "u-late")
    assert await erasure_rows(noise) == {pseudonym_of("never-was"), pseudonym_of("u-late")}

    # A day on, both are kept: an erasure lasts at least ERASURES_KEPT.
    noise.clock.at = START + dt.timedelta(days=1)
    assert (await noise.runtime.retention.run_once()).erasures == 0
    assert len(await erasure_rows(noise)) == 2

    # Past it, the one no waiting event needs goes; u-late's event still waits.
    noise.clock.at = START + ERASURES_KEPT + dt.timedelta(days=1)
    assert (await noise.runtime.retention.run_once()).erasures == 1
    assert await erasure_rows(noise) == {pseudonym_of("u-late")}

    # Planned, the event leaves u-late out, and the erasure has done its work.
    await noise.drain()
    deliveries = await noise.deliveries(waiting)
    assert {user for user, _channel in deliveries} == {pseudonym_of("u-late")}
    assert {d["reason"] for d in deliveries.values()} == {"erased"}
    assert (await noise.runtime.retention.run_once()).erasures == 1
    assert await erasure_rows(noise) == set()
