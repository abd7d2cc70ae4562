"""The tables ``events`` owns: accepted events, and the idempotency keys that claimed them."""

from __future__ import annotations

import sqlalchemy as sa

from tidings.kit.tables.schema import JSON, Id, UTCDateTime, metadata, now_column

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("tenant", sa.String(200), nullable=False),
    sa.Column("type", sa.String(200), nullable=False),
    sa.Column("idempotency_key", sa.String(255)),
    sa.Column("actor", JSON),
    sa.Column("recipients", JSON),
    sa.Column("topic", sa.String(255)),
    sa.Column("data", JSON, nullable=False),
    sa.Column("api_key_id", Id),
    now_column(),
    sa.Column("planned_at", UTCDateTime()),
    # Profile fields the event carried that were not stored (its key may not write
    # profiles): user id → fields, used for this event's deliveries only.
    sa.Column("recipient_profiles", JSON),
    # When the producer asked for it to be sent (``send_at``): nothing is planned before;
    # null for "now".
    sa.Column("send_at", UTCDateTime()),
    # A producer's name for events it may cancel together, per API key (``api_key_id``),
    # and when they were cancelled.
    sa.Column("cancellation_key", sa.String(255)),
    sa.Column("cancelled_at", UTCDateTime()),
    # Retention, the console's event search newest first, the newest event's time.
    sa.Index(None, "created_at"),
    # POST /v1/events/cancel: a key's events by their cancellation key.
    sa.Index(None, "api_key_id", "cancellation_key"),
)

idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    sa.Column("tenant", sa.String(200), primary_key=True),
    # The id of the API key that claimed it: each key has its own idempotency keys.
    sa.Column("namespace", Id, primary_key=True),
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("body_hash", sa.String(64), nullable=False),
    sa.Column("event_id", Id, nullable=False),
    now_column(),
)
