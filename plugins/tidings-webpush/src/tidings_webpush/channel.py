"""The Web Push channel: the catalog section, the payload, and sending with VAPID."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

import aiohttp
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from fastapi import APIRouter
from py_vapid import Vapid, VapidException  # type: ignore[import-untyped]
from pydantic import BaseModel, ConfigDict, Field
from pywebpush import WebPushException, webpush_async  # type: ignore[import-untyped]
from tidings import channels

from tidings_webpush import routes
from tidings_webpush.keys import b64url

# Push services accept 4096 bytes of payload; encryption adds a header and padding.
PAYLOAD_MAX = 3800
# A push service answers these for a subscription that no longer exists.
GONE = frozenset({404, 410})
SEND_TIMEOUT_SECONDS = 10.0
_FIELDS = ("title", "body", "url", "icon", "tag")


class WebPushSection(BaseModel):
    """``channels.webpush`` of a type: what the browser shows; every text is a template."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    title: str
    body: str = ""
    # Opened when the notification is clicked: relative to the site, or http(s).
    url: str | None = None
    icon: str | None = None
    # Notifications with the same tag replace each other on the device.
    tag: str | None = None
    # How long the push service keeps the message for an offline device.
    ttl: int = Field(default=86_400, ge=0, le=2_419_200)
    urgency: Literal["very-low", "low", "normal", "high"] = "normal"


class WebPushChannel(channels.Channel):
    """Pushes notifications to people's browsers through their push services."""

    name: ClassVar[str] = "webpush"
    section: ClassVar[type[BaseModel]] = WebPushSection

    def __init__(self) -> None:
        self._vapid: Vapid | None = None
        self._subject = ""
        self._addresses: channels.AddressBook | None = None
        self._allow_private = False
        self._session: aiohttp.ClientSession | None = None

    def configure(self, services: channels.ChannelServices) -> None:
        """Read the VAPID key and subject (``TIDINGS_WEBPUSH_VAPID_PRIVATE_KEY``,
        ``TIDINGS_WEBPUSH_VAPID_SUBJECT``).

        Raises:
            channels.ChannelUnavailable: a setting is missing, or the key does not load.
        """
        key = services.settings.get("vapid_private_key", "").strip()
        subject = services.settings.get("vapid_subject", "").strip()
        if not key or not subject:
            raise channels.ChannelUnavailable(
                "set TIDINGS_WEBPUSH_VAPID_PRIVATE_KEY and TIDINGS_WEBPUSH_VAPID_SUBJECT "
                "(tidings-webpush-keys makes a key pair)"
            )
        if not subject.startswith(("mailto:", "https://")):
            raise channels.ChannelUnavailable(
                f"TIDINGS_WEBPUSH_VAPID_SUBJECT must be a mailto: or https: URL, not {subject!r}"
            )
        try:
            self._vapid = Vapid.from_string(private_key=key)
        except (VapidException, ValueError) as exc:
            raise channels.ChannelUnavailable(
                f"TIDINGS_WEBPUSH_VAPID_PRIVATE_KEY does not load: {exc}"
            ) from exc
        self._subject = subject
        self._addresses = services.addresses
        allow = services.settings.get("allow_private_endpoints", "")
        self._allow_private = allow.lower() in ("1", "true", "yes")

    @property
    def public_key(self) -> str:
        """The VAPID public key, base64url: a page's ``applicationServerKey``."""
        assert self._vapid is not None, "configure first"
        return b64url(
            self._vapid.public_key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
        )

    @property
    def addresses(self) -> channels.AddressBook:
        assert self._addresses is not None, "configure first"
        return self._addresses

    def router(self) -> APIRouter:
        return routes.router(self, allow_private=self._allow_private)

    def render(
        self, section: channels.ChannelSection, context: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The notification's fields; a link that is not relative or http(s) is refused."""
        payload = section.render_all(context)
        if not payload.get("title"):
            raise channels.RenderError("channels.webpush.title", "renders empty")
        for name in ("url", "icon"):
            link = payload.get(name)
            if link and not _is_web_link(link):
                raise channels.RenderError(
                    f"channels.webpush.{name}", f"{link[:100]!r} is not a relative or http(s) URL"
                )
        return payload

    def render_digest(self, content: channels.Content) -> dict[str, Any]:
        return {"title": content.title, "body": content.body, "url": content.action_url}

    async def send(
        self, delivery: channels.Delivery, payload: Mapping[str, Any], recipient: channels.Recipient
    ) -> channels.Outcome:
        """Push to every subscription of ``recipient``; those the push service says are
        gone are removed. Delivered when one took it; retried when none did and one may."""
        subscriptions = await self.addresses.of_user(recipient.id)
        if not subscriptions:
            return channels.NoAddress("no push subscription")
        data = _message(delivery, payload)
        ttl = int(payload.get("ttl", 86_400))
        urgency = str(payload.get("urgency") or "normal")
        results = await asyncio.gather(
            *(self._push(subscription, data, ttl, urgency) for subscription in subscriptions)
        )
        pushed = sum(1 for result in results if result is None)
        gone = [s for s, result in zip(subscriptions, results, strict=True) if result == "gone"]
        for subscription in gone:
            await self.addresses.forget(subscription.id)
        errors = [r for r in results if r not in (None, "gone")]
        summary = f"pushed to {pushed} of {len(subscriptions)} subscriptions"
        if gone:
            summary += f"; {len(gone)} expired and removed"
        if pushed:
            return channels.Delivered(summary)
        if not errors:
            return channels.Failed("expired", summary)
        return channels.Retry(f"{summary}; {errors[0]}")

    async def _push(
        self, subscription: channels.Address, data: str, ttl: int, urgency: str
    ) -> str | None:
        """Post one encrypted message: None when accepted, ``"gone"``, or why it failed."""
        assert self._vapid is not None
        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            await webpush_async(
                subscription_info={
                    "endpoint": subscription.address,
                    "keys": dict(subscription.secrets),
                },
                data=data,
                vapid_private_key=self._vapid,
                # A fresh dict each time: the library writes the audience and expiry in it.
                vapid_claims={"sub": self._subject},
                ttl=ttl,
                headers={"Urgency": urgency},
                timeout=SEND_TIMEOUT_SECONDS,
                aiohttp_session=self._session,
            )
        except WebPushException as exc:
            if exc.status_code in GONE:
                return "gone"
            return f"push service answered {exc.status_code}: {str(exc)[:200]}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return f"{type(exc).__name__}: {exc}"[:300]
        return None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _message(delivery: channels.Delivery, payload: Mapping[str, Any]) -> str:
    """The JSON the service worker receives; a body too long for a push is cut short."""
    message = {name: payload[name] for name in _FIELDS if payload.get(name)}
    message["id"] = delivery.id
    data = json.dumps(message, ensure_ascii=False)
    excess = len(data.encode("utf-8")) - PAYLOAD_MAX
    if excess > 0 and message.get("body"):
        body = str(message["body"]).encode("utf-8")
        message["body"] = body[: max(0, len(body) - excess - 4)].decode("utf-8", "ignore") + "…"
        data = json.dumps(message, ensure_ascii=False)
    return data


def _is_web_link(url: str) -> bool:
    if any(ord(character) < 0x20 or ord(character) == 0x7F for character in url):
        return False
    try:
        scheme = urlsplit(url).scheme
    except ValueError:
        return False
    return scheme.lower() in ("", "http", "https")
