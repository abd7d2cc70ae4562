"""Request and response models for profiles and topics."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from tidings.kit.timezones import Timezone

# PostgreSQL cannot store NUL in text: it is refused at the edge, on every engine alike.
UserId = Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=r"^[^\x00]+$")]
Name = Annotated[str, StringConstraints(max_length=200, pattern=r"^[^\x00]*$")]
Tenant = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9:._\-]{0,199}$")]
"""A tenant's id: the team or workspace an event, a key or a preference belongs to."""
TopicKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9:._\-]{0,254}$")]
Email = Annotated[
    str,
    StringConstraints(
        max_length=320, pattern=r"^[^@\s\x00-\x1f]+@[^@\s\x00-\x1f]+\.[^@\s\x00-\x1f]+$"
    ),
]
Locale = Annotated[
    str, StringConstraints(max_length=35, pattern=r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")
]
"""A BCP 47 tag; 35 characters is the longest the profile column (and RFC 5646's advice) keeps."""


class ProfileFields(BaseModel):
    """What a producer may say about a recipient."""

    model_config = ConfigDict(extra="forbid")

    email: Email | None = None
    name: Name | None = None
    locale: Locale | None = None
    timezone: Timezone | None = None


class ProfileIn(ProfileFields):
    """``PUT /v1/users/{id}``: the whole profile."""


class Profile(ProfileFields):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    created_at: dt.datetime
    updated_at: dt.datetime


class SubscribersIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_ids: list[UserId] = Field(min_length=1, max_length=1000)


class SubscribersChanged(BaseModel):
    topic: str
    changed: int


class Subscriber(BaseModel):
    user_id: str
    subscribed_at: dt.datetime


class SubscriberPage(BaseModel):
    items: list[Subscriber]
    next_cursor: str | None
