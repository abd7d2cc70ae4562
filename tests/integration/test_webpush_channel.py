"""Web Push through the channel plugin, against a push service on loopback that checks
the VAPID signature's shape and decrypts every message with the subscription's keys."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import http_ece
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from tidings_webpush.keys import generate

from tests.integration.noise_rig import START, Rig, rig, write_catalog
from tidings.kit.clock import FrozenClock
from tidings.kit.settings import Settings

PUSH_TYPE = """\
key: ping.push
category: updates
description: A ping that also goes to the browser.
schema:
  type: object
  properties:
    ref: {type: string}
channels:
  in_app:
    title: "{{ actor.name }} pinged you"
    body: "ref {{ data.ref }}"
  webpush:
    title: "{{ actor.name }} pinged you"
    body: "ref {{ data.ref }} for {{ recipient.id }}"
    url: "/pings/{{ data.ref }}"
"""
VAPID_AUTHORIZATION = re.compile(r"^vapid t=([\w-]+)\.([\w-]+)\.([\w-]+), ?k=([\w-]+)$")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Device:
    """A browser's push subscription: its keys stay here, so only it can decrypt."""

    name: str
    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    auth: bytes = field(default_factory=lambda: os.urandom(16))

    def subscription(self, base: str) -> dict[str, Any]:
        public = self.key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
        return {
            "endpoint": f"{base}/push/{self.name}",
            "keys": {"p256dh": b64url(public), "auth": b64url(self.auth)},
        }


@dataclass
class PushService:
    """Answers 201 and decrypts for registered devices, 410 for the ``gone`` endpoint."""

    vapid_public_key: str
    base: str = ""
    devices: dict[str, Device] = field(default_factory=dict)
    received: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    gone_hits: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name == "gone":
            self.gone_hits += 1
            return web.Response(status=410, text="subscription expired")
        match = VAPID_AUTHORIZATION.match(request.headers.get("Authorization", ""))
        assert match is not None, request.headers.get("Authorization")
        assert match.group(4) == self.vapid_public_key
        claims = json.loads(b64decode(match.group(2)))
        assert claims["aud"] == self.base
        assert claims["sub"] == "mailto:ops@example.com"
        assert request.headers["Content-Encoding"] == "aes128gcm"
        assert int(request.headers["TTL"]) > 0
        device = self.devices[name]
        plain = http_ece.decrypt(
            await request.read(),
            private_key=device.key,
            auth_secret=device.auth,
            version="aes128gcm",
        )
        self.received.append((name, json.loads(plain)))
        return web.Response(status=201)


@contextlib.asynccontextmanager
async def push_service(vapid_public_key: str) -> AsyncIterator[PushService]:
    service = PushService(vapid_public_key)
    app = web.Application()
    app.router.add_post("/push/{name}", service.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    service.base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    site = web.SockSite(runner, sock)
    await site.start()
    try:
        yield service
    finally:
        await runner.cleanup()


@dataclass
class Push:
    rig: Rig
    service: PushService

    async def subscribe(self, user: str, device: Device) -> dict[str, Any]:
        self.service.devices[device.name] = device
        response = await self.rig.client.post(
            "/v1/me/push/subscriptions",
            json=device.subscription(self.service.base),
            headers=self.rig.user_headers(user),
        )
        assert response.status_code == 201, response.text
        found: dict[str, Any] = response.json()
        return found

    async def subscriptions(self, user: str) -> list[dict[str, Any]]:
        response = await self.rig.client.get(
            "/v1/me/push/subscriptions", headers=self.rig.user_headers(user)
        )
        assert response.status_code == 200, response.text
        found: list[dict[str, Any]] = response.json()["subscriptions"]
        return found


@pytest.fixture
async def push(
    make_settings: Callable[..., Settings], database_url: str, tmp_path: Path
) -> AsyncIterator[Push]:
    folder = write_catalog(tmp_path / "catalog")
    (folder / "ping.push.yaml").write_text(PUSH_TYPE)
    private, public = generate()
    settings = make_settings(
        database_url=database_url,
        catalog=folder,
        worker_enabled=False,
        channel_settings={
            "webpush": {
                "vapid_private_key": private,
                "vapid_subject": "mailto:ops@example.com",
                "allow_private_endpoints": "true",
            }
        },
    )
    async with push_service(public) as service, rig(settings, FrozenClock(START)) as r:
        yield Push(r, service)


def state(delivery: dict[str, Any]) -> tuple[str, str | None]:
    return delivery["state"], delivery["reason"]


async def test_a_notification_is_pushed_encrypted_to_each_subscription(push: Push) -> None:
    await push.subscribe("u-1", Device("laptop"))
    await push.subscribe("u-1", Device("phone"))
    await push.subscribe("u-2", Device("other"))

    event_id = await push.rig.publish("ping.push", ["u-1"], key="p1", ref="r-1")
    await push.rig.drain()

    assert sorted(name for name, _ in push.service.received) == ["laptop", "phone"]
    for _, message in push.service.received:
        assert message["title"] == "Ann pinged you"
        assert message["body"] == "ref r-1 for u-1"
        assert message["url"] == "/pings/r-1"
    delivery = (await push.rig.deliveries(event_id))[("u-1", "webpush")]
    assert state(delivery) == ("delivered", None)
    assert delivery["detail"] == "pushed to 2 of 2 subscriptions"
    assert state((await push.rig.deliveries(event_id))[("u-1", "in_app")]) == ("delivered", None)

    # The job again, as if redelivered after its commit: nothing is pushed twice.
    await push.rig.drain()
    assert len(push.service.received) == 2


async def test_subscriptions_are_registered_listed_and_removed(push: Push) -> None:
    device = Device("laptop")
    first = await push.subscribe("u-1", device)
    again = await push.subscribe("u-1", device)
    assert again["id"] == first["id"]
    assert [s["id"] for s in await push.subscriptions("u-1")] == [first["id"]]
    assert await push.subscriptions("u-2") == []

    headers = push.rig.user_headers("u-2")
    stranger = await push.rig.client.delete(
        f"/v1/me/push/subscriptions/{first['id']}", headers=headers
    )
    assert stranger.status_code == 404
    assert stranger.json()["error"]["code"] == "not_found"

    headers = push.rig.user_headers("u-1")
    removed = await push.rig.client.delete(
        f"/v1/me/push/subscriptions/{first['id']}", headers=headers
    )
    assert removed.status_code == 204
    assert await push.subscriptions("u-1") == []

    bad = device.subscription(push.service.base)
    bad["keys"]["auth"] = b64url(b"short")
    refused = await push.rig.client.post("/v1/me/push/subscriptions", json=bad, headers=headers)
    assert refused.status_code == 422
    assert refused.json()["error"]["field"] == "keys.auth"

    unauthenticated = await push.rig.client.get("/v1/me/push/subscriptions")
    assert unauthenticated.status_code == 401

    key = await push.rig.client.get("/v1/me/push/key", headers=headers)
    assert key.json()["public_key"] == push.service.vapid_public_key


async def test_a_recipient_who_turned_webpush_off_gets_no_push(push: Push) -> None:
    await push.subscribe("u-1", Device("laptop"))
    response = await push.rig.client.put(
        "/v1/me/preferences",
        json={"categories": {"updates": {"channels": {"webpush": False}}}},
        headers=push.rig.user_headers("u-1"),
    )
    assert response.status_code == 200, response.text
    effective = response.json()["effective"]["categories"]["updates"]["channels"]
    assert effective["webpush"] == {"enabled": False, "source": "user"}

    event_id = await push.rig.publish("ping.push", ["u-1"], key="p1", ref="r-1")
    await push.rig.drain()

    deliveries = await push.rig.deliveries(event_id)
    assert state(deliveries[("u-1", "webpush")]) == ("suppressed", "opted_out")
    assert state(deliveries[("u-1", "in_app")]) == ("delivered", None)
    assert push.service.received == []


async def test_a_tenant_default_turns_webpush_off_and_a_user_back_on(push: Push) -> None:
    await push.subscribe("u-1", Device("laptop"))
    await push.subscribe("u-2", Device("phone"))
    off = {"channels": {"webpush": False}}
    response = await push.rig.client.put(
        "/v1/tenants/default/preferences", json=off, headers=push.rig.producer
    )
    assert response.status_code == 200, response.text
    on = {"channels": {"webpush": True}}
    response = await push.rig.client.put(
        "/v1/me/preferences", json=on, headers=push.rig.user_headers("u-2")
    )
    assert response.status_code == 200, response.text

    event_id = await push.rig.publish("ping.push", ["u-1", "u-2"], key="p1", ref="r-1")
    await push.rig.drain()

    deliveries = await push.rig.deliveries(event_id)
    assert state(deliveries[("u-1", "webpush")]) == ("suppressed", "opted_out")
    assert state(deliveries[("u-2", "webpush")]) == ("delivered", None)
    assert [name for name, _ in push.service.received] == ["phone"]


async def test_an_unknown_channel_in_preferences_is_refused(push: Push) -> None:
    response = await push.rig.client.put(
        "/v1/me/preferences",
        json={"channels": {"carrier_pigeon": False}},
        headers=push.rig.user_headers("u-1"),
    )
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "channels.carrier_pigeon"


async def test_quiet_hours_hold_a_push_until_they_end(push: Push) -> None:
    await push.subscribe("u-1", Device("laptop"))
    response = await push.rig.client.put(
        "/v1/me/preferences",
        json={"quiet_hours": {"start": "11:00", "end": "13:00", "timezone": "UTC"}},
        headers=push.rig.user_headers("u-1"),
    )
    assert response.status_code == 200, response.text

    event_id = await push.rig.publish("ping.push", ["u-1"], key="p1", ref="r-1")
    await push.rig.drain()
    held = (await push.rig.deliveries(event_id))[("u-1", "webpush")]
    assert state(held) == ("scheduled", "quiet_hours")
    assert held["detail"] == "until 2026-01-10T13:00:00+00:00"
    assert push.service.received == []

    await push.rig.advance(minutes=59)
    assert push.service.received == []
    await push.rig.advance(minutes=1)
    assert [name for name, _ in push.service.received] == ["laptop"]
    delivered = (await push.rig.deliveries(event_id))[("u-1", "webpush")]
    assert state(delivered) == ("delivered", None)


async def test_an_expired_subscription_is_removed_and_the_delivery_fails(push: Push) -> None:
    gone = Device("gone")
    await push.subscribe("u-1", gone)
    assert len(await push.subscriptions("u-1")) == 1

    event_id = await push.rig.publish("ping.push", ["u-1"], key="p1", ref="r-1")
    await push.rig.drain()

    delivery = (await push.rig.deliveries(event_id))[("u-1", "webpush")]
    assert state(delivery) == ("failed", "expired")
    assert push.service.gone_hits == 1
    assert await push.subscriptions("u-1") == []

    # With the expired one gone, the next notification finds no address at all.
    later = await push.rig.publish("ping.push", ["u-1"], key="p2", ref="r-2")
    await push.rig.drain()
    assert state((await push.rig.deliveries(later))[("u-1", "webpush")]) == (
        "suppressed",
        "no_address",
    )
    assert push.service.gone_hits == 1


async def test_an_expired_subscription_beside_a_live_one_still_delivers(push: Push) -> None:
    await push.subscribe("u-1", Device("gone"))
    await push.subscribe("u-1", Device("phone"))

    event_id = await push.rig.publish("ping.push", ["u-1"], key="p1", ref="r-1")
    await push.rig.drain()

    delivery = (await push.rig.deliveries(event_id))[("u-1", "webpush")]
    assert state(delivery) == ("delivered", None)
    assert delivery["detail"] == "pushed to 1 of 2 subscriptions; 1 expired and removed"
    assert [s["endpoint"] for s in await push.subscriptions("u-1")] == [
        f"{push.service.base}/push/phone"
    ]


async def test_an_hourly_cadence_gathers_pushes_into_one_digest(push: Push) -> None:
    await push.subscribe("u-1", Device("laptop"))
    response = await push.rig.client.put(
        "/v1/me/preferences",
        json={"categories": {"updates": {"digest": {"cadence": "hourly"}}}},
        headers=push.rig.user_headers("u-1"),
    )
    assert response.status_code == 200, response.text

    sent = [
        await push.rig.publish("ping.push", ["u-1"], key=f"p{i}", ref=f"r-{i}") for i in range(2)
    ]
    await push.rig.drain()
    for event_id in sent:
        held = (await push.rig.deliveries(event_id))[("u-1", "webpush")]
        assert state(held) == ("scheduled", "digest")
    assert push.service.received == []

    await push.rig.advance(hours=1)
    [(name, message)] = push.service.received
    assert name == "laptop"
    assert message["title"] == "2 new notifications"
    assert "Ann pinged you" in message["body"]
    for event_id in sent:
        assert (await push.rig.deliveries(event_id))[("u-1", "webpush")]["state"] == "digested"
