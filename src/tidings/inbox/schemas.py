"""Models of the end user's inbox API."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
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


def item_of(row: Mapping[str, Any]) -> Item:
    """An inbox row, the user's own or a broadcast, as the API shows it."""
    return Item(
        id=row["id"],
        type=row["type"],
        category=row["category"],
        title=row["title"],
        body=row["body"],
        action_url=row["action_url"],
        actor=row["actor"],
        event_id=row["event_id"],
        created_at=row["created_at"],
        read=row.get("read_at") is not None,
        seen=row.get("seen_at") is not None,
        archived=row.get("archived_at") is not None,
        read_at=row.get("read_at"),
        seen_at=row.get("seen_at"),
        archived_at=row.get("archived_at"),
        updated_at=row.get("updated_at"),
        group=_group_of(row),
    )


def _group_of(row: Mapping[str, Any]) -> Group | None:
    if row.get("group_key") is None:
        return None
    return Group(
        key=row["group_key"], count=row["group_count"], actors=row.get("group_actors") or []
    )
