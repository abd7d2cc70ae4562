"""The tables ``users`` owns: profiles, topics and their subscribers, and erasures."""

from __future__ import annotations

import sqlalchemy as sa

from tidings.kit.tables.schema import UTCDateTime, metadata, now_column

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.String(255), primary_key=True),
    sa.Column("email", sa.String(320)),
    sa.Column("name", sa.String(200)),
    sa.Column("locale", sa.String(35)),
    sa.Column("timezone", sa.String(64)),
    now_column(),
    now_column("updated_at"),
)

topics = sa.Table(
    "topics",
    metadata,
    sa.Column("key", sa.String(255), primary_key=True),
    now_column(),
)

subscriptions = sa.Table(
    "subscriptions",
    metadata,
    sa.Column("topic", sa.String(255), primary_key=True),
    sa.Column("user_id", sa.String(255), primary_key=True),
    now_column(),
    sa.Index(None, "user_id"),
)

erasures = sa.Table(
    "erasures",
    metadata,
    # The erased user's pseudonym (``erased:`` and a hash of the id): the id itself is
    # not kept. Work for events accepted up to ``erased_before`` is dropped for them.
    sa.Column("pseudonym", sa.String(255), primary_key=True),
    sa.Column("erased_before", UTCDateTime(), nullable=False),
    now_column(),
    sa.Index(None, "created_at"),
)
