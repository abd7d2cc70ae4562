"""send later and cancel: an event remembers the time its producer asked it to be sent
at, its cancellation key and when it was cancelled; a delivery being handed over is
claimed by its sender until a time

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 23:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("send_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("cancellation_key", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_events_api_key_id_cancellation_key"),
            ["api_key_id", "cancellation_key"],
            unique=False,
        )
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_column("claimed_until")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_events_api_key_id_cancellation_key"))
        batch_op.drop_column("cancelled_at")
        batch_op.drop_column("cancellation_key")
        batch_op.drop_column("send_at")
