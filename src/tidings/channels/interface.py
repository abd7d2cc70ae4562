"""The contract a channel plugin implements, and what Tidings hands it.

A channel has a name (the key under ``channels:`` in a type's catalog file), a pydantic
model of that section, a way to turn a rendered section into the payload it sends, and
an asynchronous ``send`` that reports one of three outcomes. It may also serve end-user
routes (registering an address, say) and keep addresses in the store Tidings gives it.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import pydantic

if TYPE_CHECKING:
    import datetime as dt

    from fastapi import APIRouter

    from tidings.catalog.channel_section import ChannelSection


class ChannelUnavailable(Exception):
    """A channel cannot run in this deployment (its settings are missing, say).

    Raised by ``Channel.configure``: Tidings then leaves the channel out, and its
    deliveries are suppressed as ``channel_unavailable``.
    """


@dataclass(frozen=True)
class Recipient:
    """Who a delivery is for: the profile Tidings knows."""

    id: str
    name: str | None = None
    email: str | None = None
    locale: str | None = None
    timezone: str | None = None


@dataclass(frozen=True)
class Delivery:
    """One notification on one channel: what ``send`` is asked to deliver.

    ``attempt`` is 1 on the first try; ``event_id`` is the event's, or the digest's id
    when the delivery carries a digest.
    """

    id: str
    event_id: str
    type: str
    channel: str
    attempt: int = 1
    digest: bool = False


@dataclass(frozen=True)
class Content:
    """A notification as plain text: what a digest renders to, whatever the channel."""

    title: str
    body: str
    action_url: str | None = None


@dataclass(frozen=True)
class Delivered:
    """The channel's service took the message; ``detail`` is kept on the delivery."""

    detail: str | None = None


@dataclass(frozen=True)
class Failed:
    """It will never go through (a gone address, a refused payload): not retried.

    ``reason`` is a short machine-readable code (``expired``, ``rejected``).
    """

    reason: str
    detail: str | None = None


@dataclass(frozen=True)
class Retry:
    """It may go through later: retried with backoff up to the job's attempt limit."""

    detail: str | None = None


@dataclass(frozen=True)
class NoAddress:
    """The recipient has no address on this channel: suppressed as ``no_address``."""

    detail: str | None = None


Outcome = Delivered | Failed | Retry | NoAddress


@dataclass(frozen=True)
class Address:
    """One address of one user on one channel: a push subscription, a device token.

    ``address`` is what identifies it (a push endpoint); ``secrets`` what sending to it
    needs besides (the subscription's keys).
    """

    id: str
    user_id: str
    address: str
    secrets: Mapping[str, Any] = field(default_factory=dict)
    created_at: dt.datetime | None = None


class AddressBook(abc.ABC):
    """The addresses of a channel's users, stored by Tidings (table ``channel_addresses``)."""

    @abc.abstractmethod
    async def add(self, user_id: str, address: str, secrets: Mapping[str, Any]) -> Address:
        """Register ``address`` for ``user_id``; registering it again replaces its secrets."""

    @abc.abstractmethod
    async def of_user(self, user_id: str) -> list[Address]:
        """The user's addresses, oldest first."""

    @abc.abstractmethod
    async def remove(self, user_id: str, address_id: str) -> bool:
        """Remove one of the user's addresses; False when the user has no such address."""

    @abc.abstractmethod
    async def forget(self, address_id: str) -> None:
        """Remove an address whoever it belongs to (it expired); nothing when it is gone."""


@dataclass(frozen=True)
class ChannelServices:
    """What Tidings gives a channel when it configures it.

    ``settings`` are the ``TIDINGS_<NAME>_*`` environment variables, by the rest of
    their name in lower case (``TIDINGS_WEBPUSH_VAPID_SUBJECT`` → ``vapid_subject``).
    ``addresses`` is the channel's own address book.
    """

    settings: Mapping[str, str]
    addresses: AddressBook
    base_url: str = "http://localhost:8000"


class Channel(abc.ABC):
    """A way of reaching people, added to Tidings through the ``tidings.channels`` entry
    point group.

    ``name`` is the key of its section under ``channels:`` in a type's file, and of its
    deliveries, preferences and job payloads. ``section`` is the pydantic model of that
    section: every string field in it is a Jinja template, compiled and rendered in the
    same sandbox as the built-in channels' templates.
    """

    name: ClassVar[str]
    section: ClassVar[type[pydantic.BaseModel]]

    def configure(self, services: ChannelServices) -> None:  # noqa: B027 - optional hook
        """Take this deployment's settings and address book, before any send or route.

        Raises:
            ChannelUnavailable: the channel cannot run here (a setting is missing).
        """

    def render(self, section: ChannelSection, context: Mapping[str, Any]) -> dict[str, Any]:
        """The payload of one notification for one recipient: by default every template of
        the section, rendered. ``context`` holds ``data``, ``actor``, ``recipient`` and
        ``event``. Raises ``RenderError`` (``tidings.channels.RenderError``)."""
        return section.render_all(context)

    def render_digest(self, content: Content) -> dict[str, Any]:
        """The payload of a digest, from its rendered title, body and link."""
        return {"title": content.title, "body": content.body, "url": content.action_url}

    @abc.abstractmethod
    async def send(
        self, delivery: Delivery, payload: Mapping[str, Any], recipient: Recipient
    ) -> Outcome:
        """Deliver ``payload`` to ``recipient``; an exception counts as ``Retry``."""

    def router(self) -> APIRouter | None:
        """End-user routes the channel serves (mounted as they are), or None."""
        return None

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release what ``configure`` opened."""
