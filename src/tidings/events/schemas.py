"""Request and response models of the producer's events API."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
)

from tidings.kit import errors, json_input
from tidings.users.schemas import Name, ProfileFields, Tenant, TopicKey, UserId

AvatarUrl = Annotated[str, StringConstraints(max_length=2000, pattern=r"^[^\x00]*$")]


class Actor(BaseModel):
    """Who caused the event; shown on the notification."""

    model_config = ConfigDict(extra="forbid")

    id: UserId
    name: Name | None = None
    avatar_url: AvatarUrl | None = None


class RecipientIn(ProfileFields):
    """A recipient: an id, optionally with profile fields to record on the way."""

    id: UserId


def _id_to_recipient(value: Any) -> Any:
    return {"id": value} if isinstance(value, str) else value


def _rfc3339_text(value: Any) -> Any:
    """A time is given as RFC 3339 text with its offset, never as a number (whose unit and
    zone a reader would have to guess)."""
    if isinstance(value, int | float):
        raise ValueError(
            "give a time as RFC 3339 text with its offset, e.g. 2026-03-02T09:00:00+01:00, "
            "not a number"
        )
    return value


CHECKED_JSON: dict[str, Any] = {"checked_json": True}
"""The validation context of JSON whose every value ``json_input.check`` (or the
``StrictJson`` middleware) has already passed: the payload is not walked again."""


def _storable(data: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
    """Refuse what a store would keep differently or not at all (NUL, lone surrogates,
    integers beyond 64 bits, NaN, deep nesting): a payload is kept the same on every
    engine. The HTTP API refuses these before parsing; events from the broker meet them
    here."""
    if info.context is not None and info.context.get("checked_json"):
        return data
    try:
        json_input.check(data, "data")
    except errors.Invalid as exc:
        raise ValueError(exc.message) from None
    return data


class EventIn(BaseModel):
    """One event, as a producer publishes it."""

    model_config = ConfigDict(extra="forbid")

    type: Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\x00]+$")]
    idempotency_key: Annotated[
        str, StringConstraints(min_length=1, max_length=255, pattern=r"^[^\x00]+$")
    ]
    tenant: Tenant = "default"
    actor: Actor | None = None
    recipients: (
        Annotated[
            list[Annotated[RecipientIn, BeforeValidator(_id_to_recipient)]],
            Field(min_length=1, max_length=1000),
        ]
        | None
    ) = None
    topic: TopicKey | None = None
    data: Annotated[dict[str, Any], AfterValidator(_storable)] = Field(default_factory=dict)
    cancellation_key: (
        Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=r"^[^\x00]+$")]
        | None
    ) = Field(
        default=None,
        description="A name of yours for events to cancel together "
        "(POST /v1/events/cancel); per API key, like idempotency keys.",
    )
    send_at: Annotated[AwareDatetime, BeforeValidator(_rfc3339_text)] | None = Field(
        default=None,
        description="Send later: nothing is planned for anyone before this time (RFC 3339, "
        "with its offset; at most a year from now). Quiet hours, preferences and the "
        "audience of a topic apply as they are then. A time already past means now.",
    )


class BatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[EventIn] = Field(min_length=1)


class Accepted(BaseModel):
    event_id: str
    replayed: bool


class BatchAccepted(BaseModel):
    events: list[Accepted]


class Transition(BaseModel):
    state: str
    reason: str | None
    detail: str | None = Field(description="e.g. the mail server's reply")
    at: dt.datetime
    stage: str | None = Field(
        default=None,
        description="what made the change: a job kind (plan, email, in_app...), feedback, "
        "replay or api",
    )
    attempt: int | None = Field(default=None, description="the job's attempt that made it")


class DeliveryView(BaseModel):
    id: str
    user_id: str
    channel: str
    state: str
    reason: str | None
    detail: str | None
    message_id: str | None
    updated_at: dt.datetime
    transitions: list[Transition]


class EventView(BaseModel):
    id: str
    type: str
    tenant: str
    idempotency_key: str | None
    actor: dict[str, Any] | None
    recipients: list[str] | None
    topic: str | None
    data: dict[str, Any]
    created_at: dt.datetime
    send_at: dt.datetime | None = Field(
        description="when the producer asked for it to be sent; null for at once"
    )
    planned_at: dt.datetime | None
    cancellation_key: str | None
    cancelled_at: dt.datetime | None
    status: str = Field(
        description="scheduled (its send_at is still ahead), accepted (waiting to be "
        "planned), planned, or cancelled"
    )
    deliveries: list[DeliveryView]
    next_cursor: str | None = Field(description="pass as ?cursor= for more deliveries")


class BroadcastReach(BaseModel):
    """Whether one subscriber has a broadcast event's in-app item, and why (the answer to
    "why did U not get N" for an event stored once for its topic: it has no in-app
    delivery per subscriber)."""

    event_id: str
    user_id: str
    broadcast_id: str
    topic: str
    stored_at: dt.datetime
    subscribed_at: dt.datetime | None = Field(
        description="when the user subscribed to the topic; null if they are not subscribed"
    )
    shown: bool = Field(description="whether the item is in the user's inbox now")
    reason: Literal["subscribed", "not_subscribed", "subscribed_after", "opted_out", "erased"]
    seen_at: dt.datetime | None
    read_at: dt.datetime | None
    archived_at: dt.datetime | None


class CancelIn(BaseModel):
    """Which events to cancel: every event the calling API key published with this
    cancellation key."""

    model_config = ConfigDict(extra="forbid")

    cancellation_key: Annotated[
        str, StringConstraints(min_length=1, max_length=255, pattern=r"^[^\x00]+$")
    ]


class CancelledEvent(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    event_id: str
    cancelled_at: dt.datetime = Field(description="when it was first cancelled")
    suppressed: int = Field(
        description="deliveries this request stopped (reason cancelled): held, delayed, "
        "in quiet hours, waiting for a digest or for the in-app item to stay unseen"
    )
    in_flight: int = Field(
        description="deliveries a sender was handing over at that moment: they end as "
        "the provider answers (sent, or failed), never cancelled"
    )


class Cancelled(BaseModel):
    events: list[CancelledEvent] = Field(
        description="the events cancelled, already cancelled before included (by "
        "cancellation key: up to 1,000, those not cancelled before first)"
    )
    more: bool = Field(
        default=False,
        description="by cancellation key: more events not cancelled yet carry it; call again",
    )


class DryRunChannel(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    channel: str
    decision: Literal["deliver", "hold", "digest", "suppress"]
    reason: str | None = Field(
        description="why it waits (delayed, quiet_hours, waiting_unseen, digest, "
        "throttled) or is suppressed (opted_out, no_address, deduplicated, stale...)"
    )
    until: dt.datetime | None = Field(description="when a held or digested one would go")


class DryRunRecipient(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    user_id: str
    channels: list[DryRunChannel]


class DryRun(BaseModel):
    """What the planner would decide for this event, with nothing written."""

    model_config = ConfigDict(from_attributes=True)

    planned_at: dt.datetime = Field(
        description="the time the decisions are taken at: now, or the event's send_at"
    )
    recipients: list[DryRunRecipient]
    truncated: bool = Field(
        description="a topic with more subscribers than the first 1,000 the dry run plans"
    )
