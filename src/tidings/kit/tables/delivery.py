"""The tables ``delivery`` owns: deliveries and their transitions (and ``every_delivery``,
which adds the in-app deliveries that are only an inbox item), digests and their entries."""

from __future__ import annotations

import sqlalchemy as sa

from tidings.kit.tables.inbox import inbox_items
from tidings.kit.tables.schema import JSON, Id, UTCDateTime, metadata, now_column

deliveries = sa.Table(
    "deliveries",
    metadata,
    # Derived from (event, recipient, channel), with the event's time as its prefix: a
    # rerun writes the same row, and new rows land at the end of the index.
    sa.Column("id", Id, primary_key=True),
    # Derived from (event, recipient): the deliveries of one notification share it. A
    # notification is its deliveries; it has no row of its own.
    sa.Column("notification_id", Id, nullable=False),
    sa.Column("event_id", Id, nullable=False),
    sa.Column("user_id", sa.String(255), nullable=False),
    # The notification's type (always written; null only in rows of a failed backfill).
    sa.Column("type", sa.String(200)),
    sa.Column("channel", sa.String(32), nullable=False),
    # The current state. Its first state is this row as planned: the transitions table
    # holds rows only once it changes (the first change also logs where it started).
    sa.Column("state", sa.String(32), nullable=False),
    sa.Column("reason", sa.String(64)),
    sa.Column("detail", sa.Text),
    sa.Column("message_id", sa.String(255)),
    sa.Column("provider", sa.String(64)),
    sa.Column("provider_message_id", sa.String(255)),
    # While a sender hands it over: until when its claim holds. A cancellation leaves a
    # claimed delivery to its sender, so it ends either sent or cancelled, never both.
    sa.Column("claimed_until", UTCDateTime()),
    now_column(),
    now_column("updated_at"),
    # An event's deliveries (its timeline, retention), and whether planning already
    # made a recipient's notification (a rerun of a planning job).
    sa.Index(None, "event_id", "user_id"),
    # A user's deliveries newest first (their timeline, erasure).
    sa.Index(None, "user_id", "created_at"),
    # The email a provider's feedback speaks of; only email deliveries have these.
    sa.Index(
        None,
        "provider_message_id",
        postgresql_where=sa.text("provider_message_id IS NOT NULL"),
        sqlite_where=sa.text("provider_message_id IS NOT NULL"),
    ),
    sa.Index(
        None,
        "message_id",
        postgresql_where=sa.text("message_id IS NOT NULL"),
        sqlite_where=sa.text("message_id IS NOT NULL"),
    ),
    # Retention, and the console's windows over every user.
    sa.Index(None, "created_at"),
)

delivery_transitions = sa.Table(
    "delivery_transitions",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("delivery_id", Id, nullable=False),
    sa.Column("state", sa.String(32), nullable=False),
    sa.Column("reason", sa.String(64)),
    sa.Column("detail", sa.Text),
    sa.Column("at", UTCDateTime(), nullable=False),
    # Which pipeline stage made the change (plan, deliver, feedback, api...) and, for a
    # job that ran more than once, on which attempt.
    sa.Column("stage", sa.String(32)),
    sa.Column("attempt", sa.Integer),
    # A delivery's timeline; whether it changed since it was planned; retention.
    sa.Index(None, "delivery_id"),
)


def every_delivery() -> sa.Subquery:
    """Every delivery as a row of ``deliveries``: those rows, and the in-app deliveries
    that are their inbox item. An in-app delivery made when planned, into an item of its
    own id, writes no delivery row: the item says who got what, when (state
    ``delivered``, no transitions), for as long as the item is kept. Its
    ``notification_id`` reads null (it is derived from the event and the user)."""
    d, i = deliveries.c, inbox_items.c
    rows = sa.select(
        d.id,
        d.notification_id,
        d.event_id,
        d.user_id,
        d.type,
        d.channel,
        d.state,
        d.reason,
        d.detail,
        d.message_id,
        d.provider,
        d.provider_message_id,
        d.created_at,
        d.updated_at,
    )
    items = sa.select(
        i.id,
        sa.cast(sa.null(), Id).label("notification_id"),
        i.event_id,
        i.user_id,
        i.type,
        sa.literal("in_app", sa.String(32)).label("channel"),
        sa.literal("delivered", sa.String(32)).label("state"),
        sa.cast(sa.null(), sa.String(64)).label("reason"),
        sa.cast(sa.null(), sa.Text).label("detail"),
        sa.cast(sa.null(), sa.String(255)).label("message_id"),
        sa.cast(sa.null(), sa.String(64)).label("provider"),
        sa.cast(sa.null(), sa.String(255)).label("provider_message_id"),
        i.created_at,
        i.created_at.label("updated_at"),
    ).where(~sa.exists().where(d.id == i.id))
    return sa.union_all(rows, items).subquery("every_delivery")


digest_entries = sa.Table(
    "digest_entries",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("user_id", sa.String(255), nullable=False),
    sa.Column("tenant", sa.String(200), nullable=False),
    sa.Column("type", sa.String(200), nullable=False),
    sa.Column("digest_key", sa.String(400), nullable=False),
    sa.Column("event_id", Id, nullable=False),
    sa.Column("channels", JSON, nullable=False),
    # What the item looks like inside the digest, rendered when it arrived.
    sa.Column("content", JSON, nullable=False),
    now_column(),
    sa.Column("due_at", UTCDateTime(), nullable=False),
    sa.Column("digest_id", Id),
    sa.Index(None, "user_id", "digest_key", "digest_id"),
    sa.Index(None, "digest_id"),
)

digests = sa.Table(
    "digests",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("user_id", sa.String(255), nullable=False),
    sa.Column("tenant", sa.String(200), nullable=False),
    sa.Column("type", sa.String(200), nullable=False),
    sa.Column("digest_key", sa.String(400), nullable=False),
    sa.Column("count", sa.Integer, nullable=False),
    sa.Column("items", JSON, nullable=False),
    now_column(),
    sa.Index(None, "user_id"),
)
