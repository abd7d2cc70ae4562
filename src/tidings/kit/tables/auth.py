"""The table ``auth`` owns: API keys."""

from __future__ import annotations

import sqlalchemy as sa

from tidings.kit.tables.schema import JSON, Id, UTCDateTime, metadata, now_column

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("prefix", sa.String(32), nullable=False, unique=True),
    sa.Column("secret_hash", sa.String(64), nullable=False),
    sa.Column("scopes", JSON, nullable=False),
    now_column(),
    sa.Column("revoked_at", UTCDateTime()),
)
