"""The tables ``webhooks`` owns: endpoints, the messages sent to them, and each attempt."""

from __future__ import annotations

import sqlalchemy as sa

from tidings.kit.tables.schema import JSON, Id, UTCDateTime, metadata, now_column

webhook_endpoints = sa.Table(
    "webhook_endpoints",
    metadata,
    sa.Column("id", Id, primary_key=True),
    # The producer key that registered the endpoint and owns it.
    sa.Column("api_key_id", Id, nullable=False),
    sa.Column("url", sa.String(2000), nullable=False),
    sa.Column("description", sa.String(500)),
    # The signing secret, ``whsec_...``: kept because every message is signed with it.
    sa.Column("secret", sa.String(200), nullable=False),
    # After a rotation, the secret before it, which also signs until ``previous_secret_until``
    # so receivers can switch over without refusing a message.
    sa.Column("previous_secret", sa.String(200)),
    sa.Column("previous_secret_until", UTCDateTime()),
    # Notification-type patterns and delivery states to send; null means all.
    sa.Column("types", JSON),
    sa.Column("states", JSON),
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("disabled_at", UTCDateTime()),
    sa.Column("disabled_reason", sa.Text),
    sa.Column("consecutive_failures", sa.Integer, nullable=False, server_default="0"),
    now_column(),
    now_column("updated_at"),
    sa.Index(None, "api_key_id"),
)

webhook_messages = sa.Table(
    "webhook_messages",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("endpoint_id", Id, nullable=False),
    # The ``webhook-id`` the receiver sees: the same for every retry of the message.
    sa.Column("msg_id", sa.String(200), nullable=False),
    sa.Column("delivery_id", Id),
    sa.Column("event_id", Id),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("payload", JSON, nullable=False),
    # pending | succeeded | failed
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", UTCDateTime()),
    sa.Column("last_status", sa.Integer),
    sa.Column("last_error", sa.Text),
    now_column(),
    now_column("updated_at"),
    sa.UniqueConstraint("endpoint_id", "msg_id"),
    sa.Index(None, "endpoint_id", "created_at"),
    sa.Index(None, "delivery_id"),
)

webhook_attempts = sa.Table(
    "webhook_attempts",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("message_id", Id, nullable=False),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("status", sa.Integer),
    sa.Column("error", sa.Text),
    sa.Column("duration_ms", sa.Integer),
    # The size of the receiver's answer ("N bytes"), never its content; older rows may
    # hold text, which the API does not show.
    sa.Column("response", sa.Text),
    sa.Index(None, "message_id"),
)
