"""The table ``channels`` owns: the addresses users register for plugin channels."""

from __future__ import annotations

import sqlalchemy as sa

from tidings.kit.tables.schema import JSON, Id, metadata, now_column

channel_addresses = sa.Table(
    "channel_addresses",
    metadata,
    # Derived from (channel, user, address): registering an address again finds its row.
    sa.Column("id", Id, primary_key=True),
    # The plugin channel the address is for (``webpush``).
    sa.Column("channel", sa.String(64), nullable=False),
    sa.Column("user_id", sa.String(255), nullable=False),
    # What identifies the address on its channel: a push endpoint URL.
    sa.Column("address", sa.String(2000), nullable=False),
    # What sending to it needs besides: a push subscription's keys.
    sa.Column("secrets", JSON, nullable=False),
    now_column(),
    now_column("updated_at"),
    sa.Index(None, "channel", "user_id"),
)
