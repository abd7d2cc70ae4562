"""lean deliveries: a notification is its deliveries (the notifications table folds into
a ``type`` column on them), an in-app delivery made into its own item is that item (an
index on the items' event), and the delivery indexes are those a query needs

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("type", sa.String(length=200), nullable=True))
    op.execute(
        "UPDATE deliveries SET type = "
        "(SELECT n.type FROM notifications n WHERE n.id = deliveries.notification_id)"
    )
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_deliveries_event_id"))
        batch_op.drop_index(batch_op.f("ix_deliveries_user_id"))
        batch_op.drop_index(batch_op.f("ix_deliveries_message_id"))
        batch_op.drop_index(batch_op.f("ix_deliveries_provider_message_id"))
        batch_op.create_index(
            batch_op.f("ix_deliveries_event_id_user_id"), ["event_id", "user_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_deliveries_message_id"),
            ["message_id"],
            unique=False,
            postgresql_where=sa.text("message_id IS NOT NULL"),
            sqlite_where=sa.text("message_id IS NOT NULL"),
        )
        batch_op.create_index(
            batch_op.f("ix_deliveries_provider_message_id"),
            ["provider_message_id"],
            unique=False,
            postgresql_where=sa.text("provider_message_id IS NOT NULL"),
            sqlite_where=sa.text("provider_message_id IS NOT NULL"),
        )
    with op.batch_alter_table("inbox_items", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_inbox_items_event_id_user_id"), ["event_id", "user_id"], unique=False
        )
    op.drop_table("notifications")


def downgrade() -> None:
    # In-app deliveries that are their item get their row back: the release before
    # reads deliveries only from their table.
    op.execute(
        "INSERT INTO deliveries (id, notification_id, event_id, user_id, type, channel, "
        "state, created_at, updated_at) "
        "SELECT i.id, COALESCE((SELECT MIN(d.notification_id) FROM deliveries d "
        "WHERE d.event_id = i.event_id AND d.user_id = i.user_id), i.id), "
        "i.event_id, i.user_id, i.type, 'in_app', 'delivered', "
        "i.created_at, i.created_at FROM inbox_items i "
        "WHERE NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.id = i.id)"
    )
    with op.batch_alter_table("inbox_items", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_inbox_items_event_id_user_id"))
    op.create_table(
        "notifications",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("type", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifications")),
    )
    op.execute(
        "INSERT INTO notifications (id, event_id, user_id, type, created_at) "
        "SELECT notification_id, MIN(event_id), MIN(user_id), COALESCE(MIN(type), ''), "
        "MIN(created_at) FROM deliveries GROUP BY notification_id"
    )
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_notifications_created_at"), ["created_at"])
        batch_op.create_index(batch_op.f("ix_notifications_event_id"), ["event_id"])
        batch_op.create_index(batch_op.f("ix_notifications_user_id"), ["user_id"])
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_deliveries_provider_message_id"))
        batch_op.drop_index(batch_op.f("ix_deliveries_message_id"))
        batch_op.drop_index(batch_op.f("ix_deliveries_event_id_user_id"))
        batch_op.create_index(
            batch_op.f("ix_deliveries_provider_message_id"), ["provider_message_id"]
        )
        batch_op.create_index(batch_op.f("ix_deliveries_message_id"), ["message_id"])
        batch_op.create_index(batch_op.f("ix_deliveries_user_id"), ["user_id"])
        batch_op.create_index(batch_op.f("ix_deliveries_event_id"), ["event_id"])
        batch_op.drop_column("type")
