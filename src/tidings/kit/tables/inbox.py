"""The tables ``inbox`` owns: in-app items, and topic broadcasts with each reader's state."""

from __future__ import annotations

import sqlalchemy as sa

from tidings.kit.tables.schema import JSON, Id, UTCDateTime, metadata, now_column

inbox_items = sa.Table(
    "inbox_items",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("user_id", sa.String(255), nullable=False),
    sa.Column("tenant", sa.String(200), nullable=False),
    sa.Column("event_id", Id, nullable=False),
    sa.Column("type", sa.String(200), nullable=False),
    sa.Column("category", sa.String(100), nullable=False),
    sa.Column("title", sa.String(1000), nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("action_url", sa.String(2000)),
    sa.Column("actor", JSON),
    now_column(),
    sa.Column("seen_at", UTCDateTime()),
    sa.Column("read_at", UTCDateTime()),
    sa.Column("archived_at", UTCDateTime()),
    # Collapsing: items with the same group key merge into the newest unread one.
    sa.Column("group_key", sa.String(400)),
    sa.Column("group_count", sa.Integer, nullable=False, server_default="1"),
    sa.Column("group_actors", JSON),
    sa.Column("updated_at", UTCDateTime()),
    # A user's inbox newest first, its pages and counts.
    sa.Index(None, "user_id", "created_at", "id"),
    # The open group an item collapses into.
    sa.Index(None, "user_id", "group_key"),
    # Retention.
    sa.Index(None, "created_at"),
    # An event's items: its in-app deliveries (they have no row of their own, see
    # ``every_delivery``), and whether planning already reached a recipient.
    sa.Index(None, "event_id", "user_id"),
)

broadcasts = sa.Table(
    "broadcasts",
    metadata,
    # Derived from the event: the fan-out run again stores it once. Every subscriber's
    # inbox shows the item under this id.
    sa.Column("id", Id, primary_key=True),
    sa.Column("event_id", Id, nullable=False),
    sa.Column("tenant", sa.String(200), nullable=False),
    sa.Column("topic", sa.String(255), nullable=False),
    sa.Column("type", sa.String(200), nullable=False),
    sa.Column("category", sa.String(100), nullable=False),
    # The category as the catalog had it at fan-out: each reader's preferences are
    # resolved over it (mandatory shows to all; else the user's, tenant's, this default).
    sa.Column("mandatory", sa.Boolean, nullable=False),
    sa.Column("in_app_default", sa.Boolean),
    # A critical type's item is pushed live even in quiet hours.
    sa.Column("critical", sa.Boolean, nullable=False),
    sa.Column("title", sa.String(1000), nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("action_url", sa.String(2000)),
    sa.Column("actor", JSON),
    # When its event was accepted: a user id erased after that does not see it.
    sa.Column("accepted_at", UTCDateTime(), nullable=False),
    # When it was stored: only those who subscribed before see it.
    now_column(),
    sa.Index(None, "topic", "created_at", "id"),
    sa.Index(None, "created_at"),
)

broadcast_states = sa.Table(
    "broadcast_states",
    metadata,
    # What one user did with one broadcast; no row until they act on it.
    sa.Column("broadcast_id", Id, primary_key=True),
    sa.Column("user_id", sa.String(255), primary_key=True),
    sa.Column("seen_at", UTCDateTime()),
    sa.Column("read_at", UTCDateTime()),
    sa.Column("archived_at", UTCDateTime()),
    sa.Index(None, "user_id"),
)
