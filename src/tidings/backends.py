"""Each seam's backend, chosen from the settings: the queue, the counters, live push and
the request rate limits. Only the composition root (``app/``) calls these."""

from __future__ import annotations

import datetime as dt
import os
import socket

from tidings.auth.rate_limit import Limiter, RateLimits, SharedRateLimits
from tidings.delivery.digests import DIGEST_JOB
from tidings.delivery.send_jobs import CHANNEL_JOB, EMAIL_JOB, IN_APP_JOB
from tidings.events.jobs import FANOUT_JOB, PLAN_JOB
from tidings.kit.clock import Clock
from tidings.kit.counters import Counters
from tidings.kit.counters_redis import RedisCounters
from tidings.kit.counters_sql import SqlCounters
from tidings.kit.db import Database
from tidings.kit.jetstream import JetStreamQueue
from tidings.kit.jetstream_streams import Topology
from tidings.kit.live import LiveHub, LocalHub
from tidings.kit.live_nats import NatsHub
from tidings.kit.live_postgres import PostgresHub
from tidings.kit.live_redis import RedisHub
from tidings.kit.queue import Queue
from tidings.kit.queue_sql import SqlQueue
from tidings.kit.settings import Settings
from tidings.webhooks import outbox as webhook_outbox

JOB_STAGES = {
    PLAN_JOB: "plan",
    FANOUT_JOB: "plan",
    EMAIL_JOB: "deliver",
    IN_APP_JOB: "deliver",
    DIGEST_JOB: "deliver",
    CHANNEL_JOB: "deliver",
    webhook_outbox.WEBHOOK_JOB: "deliver",
}
"""Which stage (JetStream stream, ``tidings worker --stage``) runs each kind of job."""


def build_queue(settings: Settings, db: Database, clock: Clock) -> Queue:
    """The queue the settings choose: the database's own, or JetStream with the database
    as its outbox and timer store.

    Raises:
        ValueError: JetStream was chosen on the embedded SQLite default.
    """
    if settings.queue_backend == "database":
        return SqlQueue(db, clock)
    if not db.is_postgres:
        raise ValueError("the JetStream queue needs PostgreSQL: set TIDINGS_DATABASE_URL")
    return JetStreamQueue(
        db,
        clock,
        settings.nats_servers,
        Topology(
            prefix=settings.nats_prefix,
            stages=JOB_STAGES,
            partitions=settings.nats_partitions,
            replicas=settings.nats_replicas,
            ack_wait=dt.timedelta(seconds=settings.nats_ack_wait_seconds),
            max_deliver=settings.job_max_attempts + 2,
        ),
        max_attempts=settings.job_max_attempts,
        name=f"tidings {socket.gethostname()}:{os.getpid()}",
        stages=settings.stages,
        lanes=settings.lanes,
        timer_poll_seconds=settings.scheduler_poll_seconds,
    )


def build_live_hub(settings: Settings) -> LiveHub:
    """The hub ``settings.live_backend`` names; call ``start()`` before use."""
    per_user = settings.max_streams_per_user
    if settings.live_backend == "nats":
        return NatsHub(settings.nats_servers, settings.nats_prefix, max_per_user=per_user)
    if settings.live_backend == "redis":
        return RedisHub(settings.redis_url, settings.redis_prefix, max_per_user=per_user)
    if settings.live_backend == "postgres":
        if settings.is_embedded:
            raise ValueError(
                "TIDINGS_LIVE_BACKEND=postgres needs PostgreSQL: set TIDINGS_DATABASE_URL"
            )
        return PostgresHub(settings.resolved_database_url, max_per_user=per_user)
    return LocalHub(max_per_user=per_user)


def build_counters(settings: Settings, db: Database) -> Counters:
    """The counters the settings choose: the database's own, or Redis."""
    if settings.counters_backend == "redis":
        return RedisCounters(settings.redis_url, settings.redis_prefix)
    return SqlCounters(db)


def build_rate_limits(settings: Settings) -> Limiter:
    """The request rate limits the settings ask for: per process, or shared in Redis."""
    if settings.rate_limit_backend == "redis":
        return SharedRateLimits(
            settings.redis_url,
            settings.redis_prefix,
            settings.rate_limit_per_second,
            settings.rate_limit_burst,
        )
    return RateLimits(settings.rate_limit_per_second, settings.rate_limit_burst)
