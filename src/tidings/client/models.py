"""Typed requests and answers of the producer API, as the SDK sees them.

Answers ignore fields they do not know, so a newer server never breaks an older client.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field


class _Answer(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Accepted(_Answer):
    """``202``: the event is stored; ``replayed`` when its idempotency key was seen."""

    event_id: str
    replayed: bool


class Transition(_Answer):
    state: str
    reason: str | None = None
    detail: str | None = None
    at: dt.datetime
    stage: str | None = None
    attempt: int | None = None


class Delivery(_Answer):
    id: str
    user_id: str
    channel: str
    state: str
    reason: str | None = None
    detail: str | None = None
    transitions: list[Transition] = Field(default_factory=list)


class EventView(_Answer):
    """An event and what became of it for each recipient."""

    id: str
    type: str
    tenant: str
    idempotency_key: str | None = None
    recipients: list[str] | None = None
    topic: str | None = None
    data: dict[str, Any]
    created_at: dt.datetime
    send_at: dt.datetime | None = None
    planned_at: dt.datetime | None = None
    cancellation_key: str | None = None
    cancelled_at: dt.datetime | None = None
    status: str
    """scheduled (its ``send_at`` is ahead), accepted (not planned yet), planned or
    cancelled"""
    deliveries: list[Delivery] = Field(default_factory=list)
    next_cursor: str | None = None


class DryRunChannel(_Answer):
    channel: str
    decision: str
    """deliver, hold, digest or suppress"""
    reason: str | None = None
    until: dt.datetime | None = None


class DryRunRecipient(_Answer):
    user_id: str
    channels: list[DryRunChannel]


class DryRun(_Answer):
    """What publishing an event would do now, per recipient and channel."""

    planned_at: dt.datetime
    recipients: list[DryRunRecipient]
    truncated: bool = False


class CancelledEvent(_Answer):
    """One cancelled event: what the cancellation stopped, and what it left to finish."""

    event_id: str
    cancelled_at: dt.datetime
    suppressed: int
    """Deliveries stopped now (reason ``cancelled``)."""
    in_flight: int
    """Deliveries being handed over at that moment: they end as the provider answers."""


class BroadcastReach(_Answer):
    """Whether one subscriber has a broadcast event's in-app item, and why not."""

    event_id: str
    user_id: str
    broadcast_id: str
    topic: str
    stored_at: dt.datetime
    subscribed_at: dt.datetime | None = None
    shown: bool
    reason: str
    """``subscribed``, or why not: ``not_subscribed``, ``subscribed_after``,
    ``opted_out``, ``erased``."""
    seen_at: dt.datetime | None = None
    read_at: dt.datetime | None = None
    archived_at: dt.datetime | None = None


class Profile(_Answer):
    id: str
    email: str | None = None
    name: str | None = None
    locale: str | None = None
    timezone: str | None = None
    created_at: dt.datetime
    updated_at: dt.datetime


class SubscribersChanged(_Answer):
    topic: str
    changed: int


class Event(BaseModel):
    """One event to publish. ``recipients`` are user ids or profile dicts
    (``{"id", "email", "name", "locale", "timezone"}``); or a ``topic``. Without an
    ``idempotency_key`` one is generated when the event is made, and kept for every
    retry of it."""

    model_config = ConfigDict(extra="forbid")

    type: str
    data: dict[str, Any] = Field(default_factory=dict)
    recipients: list[str | dict[str, Any]] | None = None
    topic: str | None = None
    actor: dict[str, Any] | None = None
    tenant: str | None = None
    idempotency_key: str = Field(default_factory=lambda: f"sdk-{uuid.uuid4()}")
    send_at: AwareDatetime | None = None
    """Send later: nothing is planned before this time (with its zone; within a year)."""
    cancellation_key: str | None = None
    """A name of yours to cancel it by, with others (``cancel_all``); per API key."""

    def body(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


@dataclass(frozen=True)
class Retry:
    """How the client retries 429, 5xx and connection errors: up to ``attempts`` tries in
    all, waiting a random time up to ``base * 2**n`` (at most ``cap``) seconds between
    them, or what the server's ``Retry-After`` asks when it asks for longer. A server
    asking for more than ``max_retry_after`` seconds gets no retry: the error (with its
    ``retry_after``) reaches the caller at once."""

    attempts: int = 5
    base: float = 0.2
    cap: float = 10.0
    max_retry_after: float = 60.0
