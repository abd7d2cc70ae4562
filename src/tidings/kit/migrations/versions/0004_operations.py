"""operations: transition stage and attempt, trace headers on jobs, retention indexes

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 23:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_CREATED_AT = ("events", "notifications", "deliveries", "inbox_items")


def upgrade() -> None:
    with op.batch_alter_table("delivery_transitions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("stage", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("attempt", sa.Integer(), nullable=True))
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("headers", JSON, nullable=True))
    with op.batch_alter_table("dead_letters", schema=None) as batch_op:
        batch_op.add_column(sa.Column("headers", JSON, nullable=True))
        batch_op.create_index(batch_op.f("ix_dead_letters_kind"), ["kind"], unique=False)
    for table in _CREATED_AT:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.create_index(
                batch_op.f(f"ix_{table}_created_at"), ["created_at"], unique=False
            )
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_deliveries_user_id_created_at"), ["user_id", "created_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_deliveries_user_id_created_at"))
    for table in reversed(_CREATED_AT):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(batch_op.f(f"ix_{table}_created_at"))
    with op.batch_alter_table("dead_letters", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dead_letters_kind"))
        batch_op.drop_column("headers")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("headers")
    with op.batch_alter_table("delivery_transitions", schema=None) as batch_op:
        batch_op.drop_column("attempt")
        batch_op.drop_column("stage")
