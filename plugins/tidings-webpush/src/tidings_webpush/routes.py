"""End-user routes under ``/v1/me/push``: the VAPID key, and your push subscriptions."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import ipaddress
from typing import TYPE_CHECKING, Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Response
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from tidings import channels

if TYPE_CHECKING:
    from tidings_webpush.channel import WebPushChannel


def _decoded(value: str, length: int, what: str) -> bytes:
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise ValueError(f"{what} is not base64url") from None
    if len(raw) != length:
        raise ValueError(f"{what} should decode to {length} bytes, not {len(raw)}")
    return raw


def _p256dh(value: str) -> str:
    if _decoded(value, 65, "p256dh")[0] != 0x04:
        raise ValueError("p256dh is not an uncompressed P-256 public key")
    return value


def _auth(value: str) -> str:
    _decoded(value, 16, "auth")
    return value


class SubscriptionKeys(BaseModel):
    """The keys of ``PushSubscription.toJSON()``."""

    model_config = ConfigDict(extra="forbid")

    p256dh: Annotated[str, AfterValidator(_p256dh)]
    auth: Annotated[str, AfterValidator(_auth)]


class SubscriptionIn(BaseModel):
    """A browser's push subscription, as ``PushSubscription.toJSON()`` gives it."""

    model_config = ConfigDict(extra="ignore")

    endpoint: Annotated[str, Field(min_length=1, max_length=2000)]
    keys: SubscriptionKeys


class SubscriptionOut(BaseModel):
    id: str
    endpoint: str
    created_at: dt.datetime | None


class SubscriptionList(BaseModel):
    subscriptions: list[SubscriptionOut]


class PublicKey(BaseModel):
    public_key: str = Field(description="base64url; pass as applicationServerKey")


def router(channel: WebPushChannel, *, allow_private: bool) -> APIRouter:
    """The routes of ``channel``; ``allow_private`` accepts endpoints on private and
    loopback addresses (tests, an intranet push service)."""
    routes = APIRouter(prefix="/v1/me/push", tags=["webpush"])

    @routes.get("/key", response_model=PublicKey)
    async def public_key(_user: channels.EndUser) -> PublicKey:
        """The VAPID public key a page subscribes with."""
        return PublicKey(public_key=channel.public_key)

    @routes.post("/subscriptions", status_code=201, response_model=SubscriptionOut)
    async def subscribe(body: SubscriptionIn, user: channels.EndUser) -> SubscriptionOut:
        """Register a push subscription of this browser; registering it again updates it."""
        _check_endpoint(body.endpoint, allow_private=allow_private)
        found = await channel.addresses.add(user, body.endpoint, body.keys.model_dump())
        return _out(found)

    @routes.get("/subscriptions", response_model=SubscriptionList)
    async def list_subscriptions(user: channels.EndUser) -> SubscriptionList:
        """Your push subscriptions, oldest first."""
        return SubscriptionList(
            subscriptions=[_out(a) for a in await channel.addresses.of_user(user)]
        )

    @routes.delete("/subscriptions/{subscription_id}", status_code=204)
    async def unsubscribe(subscription_id: str, user: channels.EndUser) -> Response:
        """Remove one of your push subscriptions."""
        if not await channel.addresses.remove(user, subscription_id):
            raise channels.NotFound(
                f"you have no push subscription {subscription_id!r}", field="subscription_id"
            )
        return Response(status_code=204)

    return routes


def _out(address: channels.Address) -> SubscriptionOut:
    return SubscriptionOut(id=address.id, endpoint=address.address, created_at=address.created_at)


def _check_endpoint(endpoint: str, *, allow_private: bool) -> None:
    """A push endpoint is an https URL on a public host (http too, where private hosts
    are allowed); what Tidings would post to is never an internal service by default."""
    try:
        parts = urlsplit(endpoint)
        host = parts.hostname or ""
    except ValueError:
        parts, host = None, ""
    schemes = ("https", "http") if allow_private else ("https",)
    if parts is None or parts.scheme not in schemes or not host:
        raise channels.Invalid(f"endpoint must be an {' or '.join(schemes)} URL", field="endpoint")
    if allow_private:
        return
    private = host == "localhost" or host.endswith(".localhost")
    try:
        address = ipaddress.ip_address(host)
        private = private or not address.is_global
    except ValueError:
        pass
    if private:
        raise channels.Invalid("endpoint must be on a public host", field="endpoint")
