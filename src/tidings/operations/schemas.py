"""Request and response models of the operators' API."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from tidings.events.schemas import Transition


class DeliveryTimeline(BaseModel):
    """One delivery and everything that happened to it, in order."""

    id: str
    event_id: str
    notification_id: str
    user_id: str
    type: str
    channel: str
    state: str
    reason: str | None
    detail: str | None
    message_id: str | None
    provider: str | None
    provider_message_id: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    transitions: list[Transition]


class DeliveryPage(BaseModel):
    items: list[DeliveryTimeline]
    next_cursor: str | None = Field(description="pass as ?cursor= for older deliveries")


class DeadLetter(BaseModel):
    """A job given up on: what it was, how often it ran, and its last error."""

    id: str
    kind: str
    lane: int
    attempts: int
    error: str
    payload: dict[str, Any]
    headers: dict[str, Any] | None = None
    created_at: dt.datetime
    failed_at: dt.datetime


class DeadLetterPage(BaseModel):
    items: list[DeadLetter]
    next_cursor: str | None = Field(description="pass as ?cursor= for more")


class ReplayKind(BaseModel):
    """Replay every dead letter of one kind."""

    model_config = ConfigDict(extra="forbid")

    kind: Annotated[str, StringConstraints(min_length=1, max_length=64)]


class Replayed(BaseModel):
    replayed: int = Field(description="how many jobs were enqueued again")
    ids: list[str] = Field(default_factory=list, description="which, for a single replay")
