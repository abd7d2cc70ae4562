"""broadcasts: the in-app item of a large topic's event, stored once and merged into each
subscriber's inbox when read; and what each user did with one (seen, read, archived)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 11:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "broadcasts",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("tenant", sa.String(length=200), nullable=False),
        sa.Column("topic", sa.String(length=255), nullable=False),
        sa.Column("type", sa.String(length=200), nullable=False),
        sa.Column("category", sa.String(length=100), nullable=False),
        sa.Column("mandatory", sa.Boolean(), nullable=False),
        sa.Column("in_app_default", sa.Boolean(), nullable=True),
        sa.Column("critical", sa.Boolean(), nullable=False),
        sa.Column("title", sa.String(length=1000), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("action_url", sa.String(length=2000), nullable=True),
        sa.Column("actor", JSON, nullable=True),
        sa.Column("accepted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_broadcasts")),
    )
    with op.batch_alter_table("broadcasts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_broadcasts_topic_created_at_id"),
            ["topic", "created_at", "id"],
            unique=False,
        )
        batch_op.create_index(batch_op.f("ix_broadcasts_created_at"), ["created_at"], unique=False)
    op.create_table(
        "broadcast_states",
        sa.Column("broadcast_id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("read_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("archived_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("broadcast_id", "user_id", name=op.f("pk_broadcast_states")),
    )
    with op.batch_alter_table("broadcast_states", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_broadcast_states_user_id"), ["user_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("broadcast_states", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_broadcast_states_user_id"))
    op.drop_table("broadcast_states")
    with op.batch_alter_table("broadcasts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_broadcasts_created_at"))
        batch_op.drop_index(batch_op.f("ix_broadcasts_topic_created_at_id"))
    op.drop_table("broadcasts")
