"""Prometheus metrics, one registry per process's ``Runtime``.

Counters and histograms are updated where things happen; queue depth, the age of the
oldest due job and the timers waiting are read from the ``jobs`` table when ``/metrics``
is scraped, in one grouped query. Deliveries are counted as their states are written,
inside the transaction: a transaction rolled back and run again (a retried job) may
count a delivery's state twice, which is rare and never undercounts.

Code that has the process's ``Database`` but not its ``Runtime`` (the repository's
module functions) finds the metrics with ``of(db)``; the composition root ties them with
``attach``. A database nothing is attached to gets metrics of its own that nobody
scrapes, so unit tests and tools need not care.
"""

from __future__ import annotations

import datetime as dt
import weakref
from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa
import uuid_utils
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from tidings.kit.db import Database
from tidings.kit.tables import jobs

CONTENT_TYPE = CONTENT_TYPE_LATEST
"""The content type of ``render``'s output (Prometheus text format)."""

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
UNKNOWN_TYPE = "other"
"""The ``type`` label of a rejected event whose type is not in the catalog: request
input must not mint label values."""


class Metrics:
    """Every metric of one process, in its own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.events_accepted = Counter(
            "tidings_events_accepted",
            "Events accepted by ingest, by type (replayed: an idempotency key seen before).",
            ["type", "replayed"],
            registry=r,
        )
        self.events_rejected = Counter(
            "tidings_events_rejected",
            "Events refused by ingest, by type and error code.",
            ["type", "code"],
            registry=r,
        )
        self.deliveries = Counter(
            "tidings_deliveries",
            "Delivery states entered, by channel, state and reason (suppression or failure).",
            ["channel", "state", "reason"],
            registry=r,
        )
        self.latency = Histogram(
            "tidings_delivery_latency_seconds",
            "From the event's acceptance to its in-app item being written or its email "
            "being accepted by the provider.",
            ["channel"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.provider_errors = Counter(
            "tidings_provider_errors",
            "Email provider hand-overs that failed, by provider and kind (transient, permanent).",
            ["provider", "kind"],
            registry=r,
        )
        self.retries = Counter(
            "tidings_job_retries",
            "Jobs given back to run again later, by stage.",
            ["stage"],
            registry=r,
        )
        self.dead_letters = Counter(
            "tidings_dead_letters",
            "Jobs moved to the dead letters, by stage.",
            ["stage"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "tidings_queue_depth",
            "Jobs due now (waiting or running; on JetStream: committed, not yet relayed), "
            "by stage and lane.",
            ["stage", "lane"],
            registry=r,
        )
        self.queue_age = Gauge(
            "tidings_queue_oldest_age_seconds",
            "How long the oldest due job has been due, by stage and lane.",
            ["stage", "lane"],
            registry=r,
        )
        self.timers = Gauge(
            "tidings_timers_pending",
            "Jobs waiting for a future time (delays, digests, quiet hours, retries), "
            "by stage and lane.",
            ["stage", "lane"],
            registry=r,
        )
        self.timers_next = Gauge(
            "tidings_timers_next_due_seconds",
            "Seconds until the next timer comes due, by stage and lane.",
            ["stage", "lane"],
            registry=r,
        )
        self.stream_pending = Gauge(
            "tidings_jetstream_pending_messages",
            "Messages waiting in a JetStream stage stream, by stream stage and lane.",
            ["stage", "lane"],
            registry=r,
        )
        self._seen_queues: set[tuple[str, str]] = set()

    # -- ingest ----------------------------------------------------------------------

    def event_accepted(self, type_key: str, *, replayed: bool = False) -> None:
        self.events_accepted.labels(type_key, "true" if replayed else "false").inc()

    def event_rejected(self, type_key: str, code: str) -> None:
        self.events_rejected.labels(type_key, code).inc()

    # -- deliveries ------------------------------------------------------------------

    def delivery_state(self, channel: str, state: Any, reason: str | None) -> None:
        """Count one delivery entering ``state``."""
        self.deliveries.labels(channel, str(getattr(state, "value", state)), reason or "").inc()

    def delivered(self, channel: str, accepted_at: dt.datetime, now: dt.datetime) -> None:
        """Observe the latency of one delivery from its event's acceptance."""
        self.latency.labels(channel).observe(max(0.0, (now - accepted_at).total_seconds()))

    def in_app_written(self, items: Iterable[Mapping[str, Any]], now: dt.datetime) -> None:
        """Observe the latency of in-app items just written, from their events' ids (time
        ordered, minted when the event was accepted)."""
        for item in items:
            accepted = accepted_at(item.get("event_id"))
            if accepted is not None:
                self.delivered("in_app", accepted, now)

    def provider_error(self, provider: str, *, permanent: bool) -> None:
        self.provider_errors.labels(
            provider or "unknown", "permanent" if permanent else "transient"
        ).inc()

    # -- jobs --------------------------------------------------------------------------

    def job_retried(self, kind: str) -> None:
        self.retries.labels(kind).inc()

    def job_buried(self, kind: str, count: int = 1) -> None:
        self.dead_letters.labels(kind).inc(count)

    async def observe_queue(self, db: Database, now: dt.datetime) -> None:
        """Read the ``jobs`` table's depth, oldest due job and timers, per stage and lane."""
        due = (jobs.c.run_at <= now).label("due")
        # A due job waits from when it came due, or from when it was queued if it was due
        # already then (a topic's next page is due since its event was accepted).
        waiting_since = sa.case(
            (jobs.c.created_at > jobs.c.run_at, jobs.c.created_at), else_=jobs.c.run_at
        )
        query = sa.select(
            jobs.c.kind,
            jobs.c.lane,
            due,
            sa.func.count().label("n"),
            sa.func.min(jobs.c.run_at).label("first"),
            sa.func.min(waiting_since).label("waiting"),
        ).group_by(jobs.c.kind, jobs.c.lane, sa.literal_column("due"))
        async with db.reader() as conn:
            rows = (await conn.execute(query)).all()
        for gauge in (self.queue_depth, self.queue_age, self.timers, self.timers_next):
            gauge.clear()
        for row in rows:
            labels = (row.kind, str(row.lane))
            first = _aware(row.first)
            if row.due:
                waiting = _aware(row.waiting)
                self.queue_depth.labels(*labels).set(row.n)
                self.queue_age.labels(*labels).set(max(0.0, (now - waiting).total_seconds()))
            else:
                self.timers.labels(*labels).set(row.n)
                self.timers_next.labels(*labels).set(max(0.0, (first - now).total_seconds()))
        # Every stage and lane that had work once keeps reporting, at zero, once it has none.
        for gauge in (self.queue_depth, self.timers):
            for labels in self._seen_queues:
                gauge.labels(*labels)
        self._seen_queues.update((row.kind, str(row.lane)) for row in rows)

    def observe_streams(self, pending: Mapping[tuple[str, int], int]) -> None:
        """Set the JetStream pending counts, per (stage, lane)."""
        self.stream_pending.clear()
        for (stage, lane), count in pending.items():
            self.stream_pending.labels(stage, str(lane)).set(count)

    def render(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)


def accepted_at(event_id: Any) -> dt.datetime | None:
    """When an event was accepted, from its time-ordered id (None if it is not one)."""
    if not isinstance(event_id, str):
        return None
    try:
        parsed = uuid_utils.UUID(event_id)
    except ValueError:
        return None
    if parsed.version != 7:
        return None
    return dt.datetime.fromtimestamp(parsed.timestamp / 1000, dt.UTC)


def _aware(moment: Any) -> dt.datetime:
    if isinstance(moment, str):
        moment = dt.datetime.fromisoformat(moment)
    assert isinstance(moment, dt.datetime)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


_attached: weakref.WeakKeyDictionary[Database, Metrics] = weakref.WeakKeyDictionary()


def attach(db: Database, metrics: Metrics) -> None:
    """Make ``metrics`` the ones ``of(db)`` finds."""
    _attached[db] = metrics


def of(db: Database) -> Metrics:
    """The metrics of the process that owns ``db``."""
    found = _attached.get(db)
    if found is None:
        found = _attached[db] = Metrics()
    return found
