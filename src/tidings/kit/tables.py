"""The schema: every table Tidings keeps, one definition for SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.types import TypeDecorator

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timestamp that is always timezone-aware UTC, whatever the database keeps."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: sa.Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> dt.datetime | None:
        if value is None:
            return None
        assert isinstance(value, dt.datetime)
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
Id = sa.String(64)


def _now_column(name: str = "created_at") -> sa.Column[Any]:
    return sa.Column(name, UTCDateTime(), nullable=False)


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
    _now_column(),
    sa.Column("planned_at", UTCDateTime()),
    # Profile fields the event carried that were not stored (its key may not write
    # profiles): user id → fields, used for this event's deliveries only.
    sa.Column("recipient_profiles", JSON),
    # Retention, the console's event search newest first, the newest event's time.
    sa.Index(None, "created_at"),
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
    _now_column(),
)

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.String(255), primary_key=True),
    sa.Column("email", sa.String(320)),
    sa.Column("name", sa.String(200)),
    sa.Column("locale", sa.String(35)),
    sa.Column("timezone", sa.String(64)),
    _now_column(),
    _now_column("updated_at"),
)

topics = sa.Table(
    "topics",
    metadata,
    sa.Column("key", sa.String(255), primary_key=True),
    _now_column(),
)

subscriptions = sa.Table(
    "subscriptions",
    metadata,
    sa.Column("topic", sa.String(255), primary_key=True),
    sa.Column("user_id", sa.String(255), primary_key=True),
    _now_column(),
    sa.Index(None, "user_id"),
)

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
    _now_column(),
    _now_column("updated_at"),
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

inbox_items = sa.Table(
    "inbox_items",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("user_id", sa.String(255), nullable=False),
    sa.Column("tenant", sa.String(200), nullable=False),
    sa.Column("event_id", Id, nullable=False),
    sa.Column("type", sa.String(200), nullable=False),
    sa.Column("category", sa.String(100), nullable=False),
    sa.Column("title", sa.String(1000), nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("action_url", sa.String(2000)),
    sa.Column("actor", JSON),
    _now_column(),
    sa.Column("seen_at", UTCDateTime()),
    sa.Column("read_at", UTCDateTime()),
    sa.Column("archived_at", UTCDateTime()),
    # Collapsing: items with the same group key merge into the newest unread one.
    sa.Column("group_key", sa.String(400)),
    sa.Column("group_count", sa.Integer, nullable=False, server_default="1"),
    sa.Column("group_actors", JSON),
    sa.Column("updated_at", UTCDateTime()),
    # A user's inbox newest first, its pages and counts.
    sa.Index(None, "user_id", "created_at", "id"),
    # The open group an item collapses into.
    sa.Index(None, "user_id", "group_key"),
    # Retention.
    sa.Index(None, "created_at"),
    # An event's items: its in-app deliveries (they have no row of their own, see
    # ``every_delivery``), and whether planning already reached a recipient.
    sa.Index(None, "event_id", "user_id"),
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


api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("prefix", sa.String(32), nullable=False, unique=True),
    sa.Column("secret_hash", sa.String(64), nullable=False),
    sa.Column("scopes", JSON, nullable=False),
    _now_column(),
    sa.Column("revoked_at", UTCDateTime()),
)

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.String(200), primary_key=True),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("payload", JSON, nullable=False),
    sa.Column("lane", sa.SmallInteger, nullable=False),
    sa.Column("run_at", UTCDateTime(), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("lease_until", UTCDateTime()),
    sa.Column("leased_by", sa.String(100)),
    sa.Column("last_error", sa.Text),
    # Trace context (W3C traceparent/tracestate) of the work that enqueued the job.
    sa.Column("headers", JSON),
    _now_column(),
    # When ``run_at`` is a delay counted from a moment (a retry's backoff, a job due at
    # once): that moment, by the clock of whoever scheduled it. Null for a timer set to
    # a time of its own (a digest window's end, quiet hours). A moment still in the
    # future means that clock ran ahead; the queue then counts the delay from now.
    sa.Column("scheduled_at", UTCDateTime()),
    # Claiming what is due, lane by lane.
    sa.Index(None, "lane", "run_at"),
    # Timers asked by a clock that ran ahead, pulled back to now.
    sa.Index(None, "scheduled_at"),
)

dead_letters = sa.Table(
    "dead_letters",
    metadata,
    sa.Column("id", sa.String(200), primary_key=True),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("payload", JSON, nullable=False),
    sa.Column("lane", sa.SmallInteger, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("error", sa.Text, nullable=False),
    sa.Column("headers", JSON),
    _now_column(),
    _now_column("failed_at"),
    sa.Index(None, "kind"),
)

preference_sets = sa.Table(
    "preference_sets",
    metadata,
    # "user" or "tenant": a user's own choices, or a workspace's defaults under them.
    sa.Column("owner_kind", sa.String(16), primary_key=True),
    sa.Column("owner_id", sa.String(255), primary_key=True),
    sa.Column("choices", JSON, nullable=False),
    _now_column("updated_at"),
)

dedup_marks = sa.Table(
    "dedup_marks",
    metadata,
    # A digest of (tenant, user, type, rendered dedup key): keys can be long.
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("user_id", sa.String(255), nullable=False),
    sa.Column("first_seen", UTCDateTime(), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
    sa.Index(None, "expires_at"),
)

throttle_hits = sa.Table(
    "throttle_hits",
    metadata,
    # user | channel | category (or *): one row per delivery the throttle let through.
    sa.Column("scope", sa.String(400), primary_key=True),
    sa.Column("delivery_id", Id, primary_key=True),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Index(None, "scope", "at"),
)

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
    _now_column(),
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
    _now_column(),
    sa.Index(None, "user_id"),
)

email_suppressions = sa.Table(
    "email_suppressions",
    metadata,
    sa.Column("address", sa.String(320), primary_key=True),
    sa.Column("reason", sa.String(64), nullable=False),
    sa.Column("detail", sa.Text),
    sa.Column("provider", sa.String(64)),
    _now_column(),
)

mailbox = sa.Table(
    "mailbox",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("message_id", sa.String(255), nullable=False),
    sa.Column("delivery_id", Id),
    sa.Column("sender", sa.String(320), nullable=False),
    sa.Column("recipient", sa.String(320), nullable=False),
    sa.Column("subject", sa.Text, nullable=False),
    sa.Column("raw", sa.Text, nullable=False),
    _now_column(),
    sa.Index(None, "created_at"),
)

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
    _now_column(),
    _now_column("updated_at"),
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
    _now_column(),
    _now_column("updated_at"),
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

channel_addresses = sa.Table(
    "channel_addresses",
    metadata,
    # Derived from (channel, user, address): registering an address again finds its row.
    sa.Column("id", Id, primary_key=True),
    # The plugin channel the address is for (``webpush``).
    sa.Column("channel", sa.String(64), nullable=False),
    sa.Column("user_id", sa.String(255), nullable=False),
    # What identifies the address on its channel: a push endpoint URL.
    sa.Column("address", sa.String(2000), nullable=False),
    # What sending to it needs besides: a push subscription's keys.
    sa.Column("secrets", JSON, nullable=False),
    _now_column(),
    _now_column("updated_at"),
    sa.Index(None, "channel", "user_id"),
)

erasures = sa.Table(
    "erasures",
    metadata,
    # The erased user's pseudonym (``erased:`` and a hash of the id): the id itself is
    # not kept. Work for events accepted up to ``erased_before`` is dropped for them.
    sa.Column("pseudonym", sa.String(255), primary_key=True),
    sa.Column("erased_before", UTCDateTime(), nullable=False),
    _now_column(),
    sa.Index(None, "created_at"),
)

broadcasts = sa.Table(
    "broadcasts",
    metadata,
    # Derived from the event: the fan-out run again stores it once. Every subscriber's
    # inbox shows the item under this id.
    sa.Column("id", Id, primary_key=True),
    sa.Column("event_id", Id, nullable=False),
    sa.Column("tenant", sa.String(200), nullable=False),
    sa.Column("topic", sa.String(255), nullable=False),
    sa.Column("type", sa.String(200), nullable=False),
    sa.Column("category", sa.String(100), nullable=False),
    # The category as the catalog had it at fan-out: each reader's preferences are
    # resolved over it (mandatory shows to all; else the user's, tenant's, this default).
    sa.Column("mandatory", sa.Boolean, nullable=False),
    sa.Column("in_app_default", sa.Boolean),
    # A critical type's item is pushed live even in quiet hours.
    sa.Column("critical", sa.Boolean, nullable=False),
    sa.Column("title", sa.String(1000), nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("action_url", sa.String(2000)),
    sa.Column("actor", JSON),
    # When its event was accepted: a user id erased after that does not see it.
    sa.Column("accepted_at", UTCDateTime(), nullable=False),
    # When it was stored: only those who subscribed before see it.
    _now_column(),
    sa.Index(None, "topic", "created_at", "id"),
    sa.Index(None, "created_at"),
)

broadcast_states = sa.Table(
    "broadcast_states",
    metadata,
    # What one user did with one broadcast; no row until they act on it.
    sa.Column("broadcast_id", Id, primary_key=True),
    sa.Column("user_id", sa.String(255), primary_key=True),
    sa.Column("seen_at", UTCDateTime()),
    sa.Column("read_at", UTCDateTime()),
    sa.Column("archived_at", UTCDateTime()),
    sa.Index(None, "user_id"),
)
