"""The sending side of the channel contract: what the sender hands a channel and what it
answers.

The sender (``delivery/sender.py``) reads a batch of deliveries, screens them, and asks
each delivery's ``Carrier`` to compose and hand it over; the carrier answers with one of
``Sent``, ``Refused``, ``Later`` or ``Unaddressed``, which the sender records. Every
channel that sends has a carrier: email's (``delivery/carriers/email.py``), and one
``PluginCarrier`` around each ``Channel`` plugin (``delivery/carriers/plugins.py``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.kit.queue import Job
from tidings.planning import planner


@dataclass
class Outgoing:
    """One delivery to send, as the batch read it."""

    job: Job
    delivery: Mapping[str, Any]
    event: Mapping[str, Any] | None
    digest: Mapping[str, Any] | None
    recipient: planner.Recipient


@dataclass(frozen=True)
class Sent:
    """The channel's service took it: ``state`` is ``sent`` when it only accepted it
    for onward delivery (email), ``delivered`` when it reached the recipient's device or
    inbox as far as Tidings can tell."""

    state: Literal["sent", "delivered"] = "delivered"
    detail: str | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)
    by: str | None = None


@dataclass(frozen=True)
class Refused:
    """It will never go through as it is (rejected, cannot be rendered): failed."""

    reason: str
    detail: str | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)
    by: str | None = None


@dataclass(frozen=True)
class Later:
    """It may go through later: retried with backoff until the attempts run out."""

    detail: str | None = None
    by: str | None = None


@dataclass(frozen=True)
class Unaddressed:
    """The recipient has no address the channel can use: suppressed as ``no_address``."""

    detail: str | None = None


Result = Sent | Refused | Later | Unaddressed


@dataclass
class Batch:
    """What one batch read, shared by the middleware (``found`` holds what each of them
    read for it, by the middleware's name)."""

    read_at: dt.datetime
    items: list[Outgoing]
    events: Mapping[str, Mapping[str, Any]]
    found: dict[str, Any] = field(default_factory=dict)


class Carrier(Protocol):
    """What the sender needs of a channel: how to screen, compose and hand over."""

    @property
    def name(self) -> str: ...

    def in_flight(self) -> int:
        """How many deliveries may be on their way at once."""
        ...

    def compose_ahead(self, batch_size: int) -> int:
        """How many chunks to compose ahead of the handing over (more when composing
        runs elsewhere, in processes, while the event loop hands over)."""
        ...

    async def read(self, conn: AsyncConnection, batch: Batch) -> None:
        """Read what screening needs for the batch (a suppression list), in its read."""
        ...

    def screen(self, item: Outgoing, batch: Batch) -> str | None:
        """Why not to send ``item`` at all (a suppression reason), or None."""
        ...

    def compose(
        self, chunk: Sequence[Outgoing], now: dt.datetime, *, batch_size: int
    ) -> Awaitable[list[Any]]:
        """The chunk (of a batch of ``batch_size`` for this channel) ready to hand over,
        one entry per item: what ``hand_over`` takes, or a ``Refused`` for one that
        cannot be composed."""
        ...

    async def hand_over(self, item: Outgoing, ready: Any) -> Result:
        """Send one composed delivery; never raises (a failure is ``Later``)."""
        ...
