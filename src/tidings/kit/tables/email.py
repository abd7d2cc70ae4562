"""The tables ``email`` owns: suppressed addresses, and the built-in mail catcher's mailbox."""

from __future__ import annotations

import sqlalchemy as sa

from tidings.kit.tables.schema import Id, metadata, now_column

email_suppressions = sa.Table(
    "email_suppressions",
    metadata,
    sa.Column("address", sa.String(320), primary_key=True),
    sa.Column("reason", sa.String(64), nullable=False),
    sa.Column("detail", sa.Text),
    sa.Column("provider", sa.String(64)),
    now_column(),
)

mailbox = sa.Table(
    "mailbox",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("message_id", sa.String(255), nullable=False),
    sa.Column("delivery_id", Id),
    sa.Column("sender", sa.String(320), nullable=False),
    sa.Column("recipient", sa.String(320), nullable=False),
    sa.Column("subject", sa.Text, nullable=False),
    sa.Column("raw", sa.Text, nullable=False),
    now_column(),
    sa.Index(None, "created_at"),
)
