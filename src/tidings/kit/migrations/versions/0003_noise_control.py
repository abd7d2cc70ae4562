"""noise control: preference sets, dedup marks, throttle hits, digests, collapsing

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 14:28:44.458856
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """The noise-control tables, in order: a migration is its DDL."""
    op.create_table(
        "dedup_marks",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_dedup_marks")),
    )
    with op.batch_alter_table("dedup_marks", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_dedup_marks_expires_at"), ["expires_at"], unique=False)

    op.create_table(
        "digest_entries",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("tenant", sa.String(length=200), nullable=False),
        sa.Column("type", sa.String(length=200), nullable=False),
        sa.Column("digest_key", sa.String(length=400), nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("channels", JSON, nullable=False),
        sa.Column("content", JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("digest_id", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_digest_entries")),
    )
    with op.batch_alter_table("digest_entries", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_digest_entries_digest_id"), ["digest_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_digest_entries_user_id_digest_key_digest_id"),
            ["user_id", "digest_key", "digest_id"],
            unique=False,
        )

    op.create_table(
        "digests",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("tenant", sa.String(length=200), nullable=False),
        sa.Column("type", sa.String(length=200), nullable=False),
        sa.Column("digest_key", sa.String(length=400), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("items", JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_digests")),
    )
    with op.batch_alter_table("digests", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_digests_user_id"), ["user_id"], unique=False)

    op.create_table(
        "preference_sets",
        sa.Column("owner_kind", sa.String(length=16), nullable=False),
        sa.Column("owner_id", sa.String(length=255), nullable=False),
        sa.Column("choices", JSON, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("owner_kind", "owner_id", name=op.f("pk_preference_sets")),
    )
    op.create_table(
        "throttle_hits",
        sa.Column("scope", sa.String(length=400), nullable=False),
        sa.Column("delivery_id", sa.String(length=64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("scope", "delivery_id", name=op.f("pk_throttle_hits")),
    )
    with op.batch_alter_table("throttle_hits", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_throttle_hits_scope_at"), ["scope", "at"], unique=False
        )

    _move_preferences()
    op.drop_table("preferences")
    with op.batch_alter_table("inbox_items", schema=None) as batch_op:
        batch_op.add_column(sa.Column("group_key", sa.String(length=400), nullable=True))
        batch_op.add_column(
            sa.Column("group_count", sa.Integer(), server_default="1", nullable=False)
        )
        batch_op.add_column(sa.Column("group_actors", JSON, nullable=True))
        batch_op.add_column(sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_inbox_items_user_id_group_key"), ["user_id", "group_key"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("inbox_items", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_inbox_items_user_id_group_key"))
        batch_op.drop_column("updated_at")
        batch_op.drop_column("group_actors")
        batch_op.drop_column("group_count")
        batch_op.drop_column("group_key")

    op.create_table(
        "preferences",
        sa.Column("user_id", sa.VARCHAR(length=255), nullable=False),
        sa.Column("category", sa.VARCHAR(length=100), nullable=False),
        sa.Column("channel", sa.VARCHAR(length=32), nullable=False),
        sa.Column("enabled", sa.BOOLEAN(), nullable=False),
        sa.Column("source", sa.VARCHAR(length=64), nullable=False),
        sa.Column("updated_at", sa.DATETIME(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "category", "channel", name=op.f("pk_preferences")),
    )
    with op.batch_alter_table("throttle_hits", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_throttle_hits_scope_at"))

    op.drop_table("throttle_hits")
    op.drop_table("preference_sets")
    with op.batch_alter_table("digests", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_digests_user_id"))

    op.drop_table("digests")
    with op.batch_alter_table("digest_entries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_digest_entries_user_id_digest_key_digest_id"))
        batch_op.drop_index(batch_op.f("ix_digest_entries_digest_id"))

    op.drop_table("digest_entries")
    with op.batch_alter_table("dedup_marks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dedup_marks_expires_at"))

    op.drop_table("dedup_marks")


def _move_preferences() -> None:
    """Carry each user's channel switches over into their preference set.

    A switch on category ``*`` becomes a global one (``channels``); the others go under
    ``categories.<name>.channels``.
    """
    conn = op.get_bind()
    rows = conn.execute(
        sa.text("SELECT user_id, category, channel, enabled, updated_at FROM preferences")
    ).all()
    sets: dict[str, dict[str, Any]] = {}
    updated: dict[str, Any] = {}
    for user_id, category, channel, enabled, updated_at in rows:
        choices = sets.setdefault(user_id, {})
        if category == "*":
            choices.setdefault("channels", {})[channel] = bool(enabled)
        else:
            categories = choices.setdefault("categories", {})
            categories.setdefault(category, {}).setdefault("channels", {})[channel] = bool(enabled)
        updated[user_id] = max(updated.get(user_id, updated_at), updated_at)
    if not sets:
        return
    table = sa.table(
        "preference_sets",
        sa.column("owner_kind", sa.String),
        sa.column("owner_id", sa.String),
        sa.column("choices", JSON),
        sa.column("updated_at"),
    )
    conn.execute(
        table.insert(),
        [
            {
                "owner_kind": "user",
                "owner_id": user,
                "choices": choices,
                "updated_at": updated[user],
            }
            for user, choices in sets.items()
        ],
    )
