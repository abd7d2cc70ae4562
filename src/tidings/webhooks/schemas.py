"""Request and response models of the webhooks API."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tidings.delivery.states import DeliveryState

_SIZE = re.compile(r"(more than |at least )?[0-9]+ bytes")

TypePattern = Annotated[str, Field(min_length=1, max_length=200)]


class EndpointIn(BaseModel):
    """An endpoint to register."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=2000, description="http:// or https://")
    description: str | None = Field(default=None, max_length=500)
    types: list[TypePattern] | None = Field(
        default=None,
        max_length=100,
        description="Notification-type patterns (`comment.*`); by default every type "
        "the key may read.",
    )
    states: list[DeliveryState] | None = Field(
        default=None, description="Delivery states to hear of; by default all."
    )


class EndpointChange(BaseModel):
    """What to change on an endpoint; a field left out stays as it is."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(default=None, min_length=1, max_length=2000)
    description: str | None = Field(default=None, max_length=500)
    types: list[TypePattern] | None = Field(default=None, max_length=100)
    states: list[DeliveryState] | None = None
    enabled: bool | None = Field(
        default=None,
        description="true turns a disabled endpoint on again and forgets its failures.",
    )


class Rotation(BaseModel):
    """How a secret is rotated."""

    model_config = ConfigDict(extra="forbid")

    grace_seconds: int = Field(
        default=86_400,
        ge=0,
        le=7 * 86_400,
        description=(
            "How long the old secret goes on signing beside the new one (each message "
            "carries both signatures), so receivers can switch without refusing any; "
            "0 drops it at once."
        ),
    )


class Endpoint(BaseModel):
    """A registered endpoint; its secret is shown only when it is made."""

    id: str
    api_key_id: str
    url: str
    description: str | None
    types: list[str] | None
    states: list[str] | None
    enabled: bool
    disabled_at: dt.datetime | None
    disabled_reason: str | None
    consecutive_failures: int
    previous_secret_until: dt.datetime | None = Field(
        default=None, description="Until when the secret before the last rotation also signs."
    )
    created_at: dt.datetime
    updated_at: dt.datetime


class EndpointWithSecret(Endpoint):
    secret: str = Field(description="The `whsec_` signing secret; shown this once.")


class EndpointPage(BaseModel):
    items: list[Endpoint]
    next_cursor: str | None


class AttemptOut(BaseModel):
    at: dt.datetime
    status: int | None
    error: str | None
    duration_ms: int | None
    response: str | None = Field(
        description="The size of the receiver's answer (`6 bytes`; `at least 6 bytes` when "
        "the attempt's deadline came while it was still arriving); its content is never "
        "kept or shown."
    )

    @field_validator("response")
    @classmethod
    def _size_only(cls, value: str | None) -> str | None:
        # Attempts logged by earlier versions kept the start of the answer itself.
        return value if value is None or _SIZE.fullmatch(value) else None


class Message(BaseModel):
    """One message to an endpoint and every attempt at sending it."""

    id: str
    msg_id: str = Field(description="The `webhook-id` header: the same on every retry.")
    type: str
    delivery_id: str | None
    event_id: str | None
    state: str = Field(description="pending, succeeded or failed")
    attempts: int
    next_attempt_at: dt.datetime | None
    last_status: int | None
    last_error: str | None
    payload: dict[str, Any]
    created_at: dt.datetime
    updated_at: dt.datetime
    log: list[AttemptOut]


class MessagePage(BaseModel):
    items: list[Message]
    next_cursor: str | None
