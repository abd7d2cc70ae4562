"""The composition root: builds every backend from settings and mounts the routers."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi_offline import FastAPIOffline

from tidings import __version__, catalog
from tidings.auth.service import AuthService
from tidings.backends import (
    build_counters,
    build_live_hub,
    build_queue,
    build_rate_limits,
)
from tidings.catalog import endpoints as catalog_endpoints
from tidings.catalog.reload import CatalogReloader
from tidings.channels import runtime as channel_runtime
from tidings.channels.interface import Channel
from tidings.channels.sending import Carrier
from tidings.console import endpoints as console_endpoints
from tidings.delivery import changes as delivery_changes
from tidings.delivery import feedback_endpoints, middleware, plan_jobs
from tidings.delivery.audience import AudienceLoader
from tidings.delivery.carriers.email import EmailCarrier
from tidings.delivery.carriers.plugins import PluginCarrier
from tidings.delivery.digester import Digester
from tidings.delivery.digests import DIGEST_JOB
from tidings.delivery.feedback import FeedbackConfig, FeedbackRecorder
from tidings.delivery.job_runner import Task
from tidings.delivery.pipeline import Pipeline
from tidings.delivery.retries import RetryPolicy
from tidings.delivery.send_jobs import AVAILABLE_CHANNELS, CHANNEL_JOB, EMAIL_JOB, IN_APP_JOB
from tidings.delivery.sender import Sender as DeliverySender
from tidings.delivery.service import DeliveryService, StopErased
from tidings.delivery.worker import Worker
from tidings.email import endpoints as email_endpoints
from tidings.email.composer import EmailComposer, Sender
from tidings.email.dkim import DkimSigner
from tidings.email.providers.base import EmailProvider
from tidings.email.providers.catcher import MailCatcher
from tidings.email.providers.factory import build_provider
from tidings.email.suppressions import Suppressions
from tidings.events import endpoints as events_endpoints
from tidings.events.group_commit import GroupCommitter
from tidings.events.service import FANOUT_JOB, PLAN_JOB, EventsService
from tidings.inbox import endpoints as inbox_endpoints
from tidings.inbox.broadcasts import Broadcasts
from tidings.inbox.service import InboxService
from tidings.ingest.broker import BrokerIngest, IngestTopology
from tidings.kit import http, loops, metrics, migrate, outage, tracing
from tidings.kit.clock import Clock, SystemClock
from tidings.kit.counters import Counters
from tidings.kit.db import Database
from tidings.kit.live import LiveHub
from tidings.kit.queue import Queue
from tidings.kit.settings import Settings
from tidings.operations import endpoints as operations_endpoints
from tidings.operations.dead_letters import DeadLetters
from tidings.operations.retention import Policy, Retention
from tidings.operations.timeline import Timelines
from tidings.preferences import endpoints as preferences_endpoints
from tidings.preferences.service import PreferencesService
from tidings.users import endpoints as users_endpoints
from tidings.users import erasure as user_erasure
from tidings.users.service import UsersService
from tidings.web import cors as web_cors
from tidings.web import pages as web_pages
from tidings.webhooks import endpoints as webhooks_endpoints
from tidings.webhooks import outbox as webhook_outbox
from tidings.webhooks.sender import SendPolicy, WebhookSender
from tidings.webhooks.service import ForgetErased, WebhooksService

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """Every long-lived object of one Tidings process."""

    settings: Settings
    clock: Clock
    db: Database
    catalog: catalog.Catalog
    queue: Queue
    counters: Counters
    live: LiveHub
    auth: AuthService
    users: UsersService
    events: EventsService
    inbox: InboxService
    delivery: DeliveryService
    pipeline: Pipeline
    worker: Worker
    group_commit: GroupCommitter
    preferences: PreferencesService
    suppressions: Suppressions
    composer: EmailComposer
    provider: EmailProvider
    mail_catcher: MailCatcher | None
    feedback: FeedbackRecorder
    feedback_config: FeedbackConfig
    metrics: metrics.Metrics
    timelines: Timelines
    dead_letters: DeadLetters
    retention: Retention
    webhooks: WebhooksService
    channels: dict[str, Channel]
    """The plugin channels this process runs, by name."""
    reloader: CatalogReloader
    """Replaces ``catalog`` with the folder's current content, for every service at once."""
    ingest: BrokerIngest | None = None
    schema_ready: bool = field(default=False, init=False, repr=False)
    """The schema was seen at this version's revision: it is not read again."""
    companions: dict[str, Callable[[], Awaitable[str]]] = field(
        default_factory=dict, init=False, repr=False
    )
    """The readiness of the processes this one started (``serve --workers``), by name:
    each answers "ok" or why not, and ``/readyz`` is ready only when all of them are."""

    async def start(self, *, consume: bool, relay_poll: float | None = None) -> None:
        """Connect the engines and start what this process runs in the background: the
        relay of committed jobs (JetStream), and with ``consume`` the worker."""
        await self.live.start()
        if self.ingest is not None:
            await self.ingest.start()
        await self.queue.start(
            consume=consume,
            member=self.worker.worker_id.rsplit(":", 1)[-1],
            relay_poll=relay_poll,
        )
        if consume:
            self.worker.start()
            self.retention.start()

    async def readiness(self) -> dict[str, str]:
        """Each engine this process depends on, and whether it answers ("ok" or why not)."""
        checks: dict[str, str] = {}
        try:
            async with self.db.reader() as conn:
                await conn.execute(sa.text("SELECT 1"))
            # A full disk or a read-only file lets reads through: writes failed lately.
            checks["database"] = outage.of(self.db).problem() or "ok"
        except Exception as exc:
            checks["database"] = f"{type(exc).__name__}: {exc}"[:200]
        if checks["database"] == "ok" and self.db.is_postgres:
            checks["schema"] = await self._schema()
        checks.update(self.queue.checks())
        checks.update(await self.counters.checks())
        if self.ingest is not None:
            checks["ingest"] = "ok" if self.ingest.connected else "not connected"
        for name, companion in self.companions.items():
            try:
                checks[name] = await companion()
            except Exception as exc:
                checks[name] = f"{type(exc).__name__}: {exc}"[:200]
        return checks

    async def _schema(self) -> str:
        """Whether the schema is the one this version needs ("ok" or what to do). Only
        PostgreSQL is asked: the embedded SQLite file is brought up to date by the process
        that opens it. Once at the revision, the answer is kept: schemas do not go back."""
        if not self.schema_ready:
            try:
                async with self.db.reader() as conn:
                    problem = migrate.problem(await migrate.revision_of(conn))
            except Exception as exc:
                return f"{type(exc).__name__}: {exc}"[:200]
            if problem is not None:
                return problem
            self.schema_ready = True
        return "ok"

    async def close(self) -> None:
        if self.ingest is not None:
            await self.ingest.close()
        await self.retention.stop()
        await self.worker.stop()
        await self.queue.close()
        await self.provider.close()
        await channel_runtime.close(self.channels)
        await self.counters.close()
        await self.live.close()
        await self.db.dispose()


def build_runtime(settings: Settings, *, clock: Clock | None = None) -> Runtime:
    """Wire one process's objects from its settings.

    Long on purpose: it is the one place that reads, top to bottom, as the wiring of a
    process (every service, listener, carrier and task), each line a constructor call.

    Raises:
        catalog.CatalogInvalid: the catalog folder has errors.
    """
    clock = clock or SystemClock()
    types = catalog.load(settings.catalog)
    db = Database(settings.resolved_database_url)
    tracing.configure()
    measured = metrics.Metrics()
    metrics.attach(db, measured)
    queue = build_queue(settings, db, clock)
    counters = build_counters(settings, db)
    live = build_live_hub(settings)
    plugins = channel_runtime.configure(
        settings, db, clock, used={name for ntype in types for name in ntype.channels}
    )
    available = AVAILABLE_CHANNELS | frozenset(plugins)
    outbox = webhook_outbox.Outbox(queue, cache_seconds=settings.webhooks_cache_seconds)
    delivery_changes.listen(db, delivery_changes.Counted(measured))
    delivery_changes.listen(db, outbox)
    user_erasure.listen(db, ForgetErased())
    user_erasure.listen(db, StopErased(db))
    users = UsersService(db, clock)
    events = EventsService(db, clock, types, queue, users)
    preferences = PreferencesService(db, clock, types, channel_runtime.switchable(types))
    broadcasts = Broadcasts(
        db, clock, live, preferences, users, min_subscribers=settings.fanout_on_read_min
    )
    inbox = InboxService(db, clock, live, broadcasts=broadcasts)
    suppressions = Suppressions(db, clock)
    audience = AudienceLoader(users, preferences, suppressions)
    pipeline = Pipeline(
        db,
        clock,
        types,
        queue,
        events,
        users,
        inbox,
        audience,
        page_size=settings.topic_page_size,
        counters=counters,
        channels=available,
    )
    digester = Digester(db, clock, types, queue, inbox, audience, channels=available)
    composer = build_composer(settings)
    provider = build_provider(settings, db=db, clock=clock)
    retry = RetryPolicy(
        max_attempts=settings.job_max_attempts,
        base_seconds=settings.job_backoff_base_seconds,
        cap_seconds=settings.job_backoff_max_seconds,
    )
    lease = job_lease(settings)
    carriers: dict[str, Carrier] = {
        "email": EmailCarrier(types, suppressions, composer, provider),
        **{name: PluginCarrier(plugin, types) for name, plugin in plugins.items()},
    }
    sender = DeliverySender(
        db,
        clock,
        queue,
        events,
        users,
        retry,
        carriers,
        middleware.standard(types, clock, inbox, users, measured),
        lease=lease,
    )
    worker = Worker(
        db,
        queue,
        clock,
        {
            PLAN_JOB: Task(pipeline.plan, split=plan_jobs.split, weight=plan_jobs.weight),
            FANOUT_JOB: Task(pipeline.fanout),
            EMAIL_JOB: Task(sender.send),
            IN_APP_JOB: Task(pipeline.deliver_in_app),
            DIGEST_JOB: Task(digester.fire),
            CHANNEL_JOB: Task(sender.send),
            webhook_outbox.WEBHOOK_JOB: Task(
                WebhookSender(db, clock, queue, outbox, webhook_policy(settings)).send
            ),
        },
        batch_size=settings.worker_batch_size,
        lease=lease,
        poll_seconds=settings.worker_poll_seconds,
        retry=retry,
    )
    delivery_service = DeliveryService(db)
    runtime = Runtime(
        settings=settings,
        clock=clock,
        db=db,
        catalog=types,
        queue=queue,
        counters=counters,
        live=live,
        auth=AuthService(
            db,
            clock,
            settings.signing_secret,
            dt.timedelta(seconds=settings.user_token_ttl_seconds),
            key_cache_seconds=settings.key_cache_seconds,
        ),
        users=users,
        events=events,
        inbox=inbox,
        delivery=delivery_service,
        pipeline=pipeline,
        worker=worker,
        group_commit=GroupCommitter(events),
        preferences=preferences,
        suppressions=suppressions,
        composer=composer,
        provider=provider,
        mail_catcher=provider if isinstance(provider, MailCatcher) else None,
        feedback=FeedbackRecorder(db, clock, suppressions),
        feedback_config=FeedbackConfig.from_settings(settings),
        metrics=measured,
        timelines=Timelines(delivery_service),
        dead_letters=DeadLetters(db, clock, queue),
        channels=plugins,
        reloader=CatalogReloader(types, channel_runtime.switchable),
        retention=Retention(
            db,
            clock,
            Policy.from_settings(settings),
            interval=settings.retention_interval_seconds,
        ),
        webhooks=WebhooksService(
            db,
            clock,
            queue,
            outbox,
            allow_private=settings.webhooks_allow_private,
            max_per_key=settings.webhooks_max_per_key,
        ),
    )
    if settings.ingest_enabled:
        runtime.ingest = BrokerIngest(
            settings.nats_servers,
            IngestTopology(settings.nats_prefix, replicas=settings.nats_replicas),
            runtime.auth,
            events,
            clock,
            name=f"tidings-ingest {socket.gethostname()}:{os.getpid()}",
        )
    return runtime


def build_composer(settings: Settings) -> EmailComposer:
    """Email's composer: the sender, DKIM and the unsubscribe links the settings give."""
    return EmailComposer(
        sender=Sender(settings.email_from, settings.email_from_name, settings.sender_domain),
        signer=DkimSigner(
            domain=settings.sender_domain,
            selector=settings.dkim_selector,
            private_key_pem=settings.dkim_key_pem,
        ),
        unsubscribe_secret=settings.signing_secret,
        base_url=settings.base_url,
        unsubscribe_mailto=settings.unsubscribe_mailto or f"unsubscribe@{settings.sender_domain}",
    )


def job_lease(settings: Settings) -> dt.timedelta:
    """How long a worker holds a job it claimed."""
    lease = dt.timedelta(seconds=settings.worker_lease_seconds)
    if settings.queue_backend == "jetstream":
        # A message not acknowledged within ack_wait goes to another worker: that is
        # the lease that counts there.
        lease = min(lease, dt.timedelta(seconds=settings.nats_ack_wait_seconds))
    return lease


def webhook_policy(settings: Settings) -> SendPolicy:
    return SendPolicy(
        retry_seconds=tuple(settings.webhooks_retry_seconds),
        disable_after=settings.webhooks_disable_after,
        timeout_seconds=settings.webhooks_timeout_seconds,
        allow_private=settings.webhooks_allow_private,
    )


def create_app(settings: Settings | None = None, *, runtime: Runtime | None = None) -> FastAPI:
    """The HTTP application; starts the worker too unless ``worker_enabled`` is off."""
    runtime = runtime or build_runtime(settings or Settings())
    settings = runtime.settings
    rate_limits = build_rate_limits(settings)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        runtime.group_commit.start()
        await runtime.start(consume=settings.worker_enabled)
        try:
            yield
        finally:
            await runtime.worker.stop()
            await runtime.group_commit.stop()
            await runtime.close()
            await rate_limits.close()

    # /docs loads Swagger UI from Tidings itself, not from a CDN: the reference works
    # offline and behind a strict network policy. No ReDoc: its script fetches a logo
    # from its maker's CDN whatever it is given.
    app = FastAPIOffline(
        redoc_url=None,
        title="Tidings",
        version=__version__,
        summary="Events in; in-app inbox and email out.",
        lifespan=lifespan,
        static_url="/docs/assets",
        swagger_ui_parameters={"persistAuthorization": True},
    )
    for name in (
        "settings",
        "auth",
        "users",
        "events",
        "inbox",
        "delivery",
        "live",
        "group_commit",
        "preferences",
        "composer",
        "mail_catcher",
        "feedback",
        "feedback_config",
        "timelines",
        "dead_letters",
        "webhooks",
    ):
        setattr(app.state, name, getattr(runtime, name))
    app.state.runtime = runtime
    app.state.rate_limits = rate_limits
    http.install_error_handlers(app, outage.of(runtime.db))
    http.document_errors(app)
    app.add_middleware(http.StrictJson)
    app.add_middleware(http.RefuseNul)
    app.add_middleware(http.BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(tracing.RequestSpans)
    app.include_router(events_endpoints.router)
    app.include_router(users_endpoints.router)
    app.include_router(preferences_endpoints.router)
    app.include_router(inbox_endpoints.router)
    app.include_router(email_endpoints.router)
    app.include_router(feedback_endpoints.router)
    app.include_router(operations_endpoints.router)
    app.include_router(catalog_endpoints.router)
    app.include_router(webhooks_endpoints.router)
    app.include_router(console_endpoints.router)
    for router in channel_runtime.routers(runtime.channels):
        app.include_router(router)
    app.include_router(web_pages.widget_router)
    if settings.demo_enabled:
        app.include_router(web_pages.demo_router)
    if settings.cors_origins:
        app.add_middleware(web_cors.EndUserCors, origins=settings.cors_origins)

    add_health_routes(app, runtime)

    return app


async def observe_queues(runtime: Runtime) -> None:
    """Read the queue gauges now: the ``jobs`` table, and JetStream's streams if used.
    An engine that does not answer leaves its gauges as they were; the scrape goes on."""
    try:
        await runtime.metrics.observe_queue(runtime.db, runtime.clock.now())
        if streams := await runtime.queue.pending():
            runtime.metrics.observe_streams(streams)
    except Exception:
        log.warning("reading queue depths for /metrics failed", exc_info=True)


def add_health_routes(app: FastAPI, runtime: Runtime) -> None:
    """``/healthz`` (the process answers), ``/readyz`` (its engines answer too) and
    ``/metrics`` (Prometheus)."""

    @app.get("/metrics", tags=["operations"], response_class=PlainTextResponse)
    async def metrics_page() -> Response:
        """The process's metrics in Prometheus' text format; queue depths are read now."""
        await observe_queues(runtime)
        return Response(runtime.metrics.render(), media_type=metrics.CONTENT_TYPE)

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers; ``loop`` names its event loop (``uvloop``, or
        ``asyncio`` where uvloop is not installed)."""
        return {"status": "ok", "version": __version__, "loop": loops.name()}

    @app.get("/readyz", tags=["operations"], response_model=None)
    async def readyz() -> JSONResponse:
        """Readiness: 200 when every engine this process uses answers, else 503 naming
        the one that does not."""
        checks = await runtime.readiness()
        ready = all(state == "ok" for state in checks.values())
        return JSONResponse(
            {"status": "ready" if ready else "unavailable", "checks": checks},
            status_code=200 if ready else 503,
        )
