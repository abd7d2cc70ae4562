"""The tables of the planner's stateful rules, kept behind ``kit.counters_sql``: dedup
marks and throttle hits."""

from __future__ import annotations

import sqlalchemy as sa

from tidings.kit.tables.schema import Id, UTCDateTime, metadata

dedup_marks = sa.Table(
    "dedup_marks",
    metadata,
    # A digest of (tenant, user, type, rendered dedup key): keys can be long.
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("user_id", sa.String(255), nullable=False),
    sa.Column("first_seen", UTCDateTime(), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
    sa.Index(None, "expires_at"),
)

throttle_hits = sa.Table(
    "throttle_hits",
    metadata,
    # user | channel | category (or *): one row per delivery the throttle let through.
    sa.Column("scope", sa.String(400), primary_key=True),
    sa.Column("delivery_id", Id, primary_key=True),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Index(None, "scope", "at"),
)
