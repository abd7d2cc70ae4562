"""The tables of the database queue (``kit.queue_sql``), which the JetStream queue uses as
its outbox and timer store: jobs, and the dead letters of jobs that failed for good."""

from __future__ import annotations

import sqlalchemy as sa

from tidings.kit.tables.schema import JSON, UTCDateTime, metadata, now_column

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
    now_column(),
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
    now_column(),
    now_column("failed_at"),
    sa.Index(None, "kind"),
)
