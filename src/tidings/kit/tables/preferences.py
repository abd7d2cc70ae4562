"""The table ``preferences`` owns: each user's choices and each workspace's defaults."""

from __future__ import annotations

import sqlalchemy as sa

from tidings.kit.tables.schema import JSON, metadata, now_column

preference_sets = sa.Table(
    "preference_sets",
    metadata,
    # "user" or "tenant": a user's own choices, or a workspace's defaults under them.
    sa.Column("owner_kind", sa.String(16), primary_key=True),
    sa.Column("owner_id", sa.String(255), primary_key=True),
    sa.Column("choices", JSON, nullable=False),
    now_column("updated_at"),
)
