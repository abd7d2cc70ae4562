"""Models of the end user's inbox API."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Group(BaseModel):
    """Events collapsed into one item: "Ann and 3 others commented on Roadmap"."""

    key: str
    count: int = Field(description="events merged into this item, itself included")
    actors: list[dict[str, Any]] = Field(
        description="the newest distinct actors, newest first, at most 10"
    )


class Item(BaseModel):
    id: str
    type: str
    category: str
    title: str
    body: str
    action_url: str | None
    actor: dict[str, Any] | None
    event_id: str
    created_at: dt.datetime
    read: bool
    seen: bool
    archived: bool
    read_at: dt.datetime | None
    seen_at: dt.datetime | None
    archived_at: dt.datetime | None
    updated_at: dt.datetime | None = Field(
        description="when a later event of its group last merged into it; null if never"
    )
    group: Group | None = Field(description="null for an item that does not collapse")


class Counts(BaseModel):
    unread: int
    unseen: int
    total: int = Field(description="items not archived")


class Page(BaseModel):
    items: list[Item]
    next_cursor: str | None
    counts: Counts | None = Field(
        default=None,
        description="the inbox's counts, read with the page, when asked for (counts=true)",
    )


class Marks(BaseModel):
    """Flags to set (true) or clear (false); flags left out are not touched."""

    model_config = ConfigDict(extra="forbid")

    read: bool | None = None
    seen: bool | None = None
    archived: bool | None = None


class MarkMany(Marks):
    ids: list[str] | None = Field(
        default=None, max_length=1000, description="items to change; leave out for all items"
    )


class Marked(BaseModel):
    changed: int
    counts: Counts
