"""The wiring of one process: every service, listener, carrier and task built from the
settings into a Runtime."""

from __future__ import annotations

import datetime as dt
import os
import socket

from tidings import catalog
from tidings.app.runtime import Runtime
from tidings.auth.service import AuthService
from tidings.backends import build_counters, build_live_hub, build_queue
from tidings.catalog.reload import CatalogReloader
from tidings.channels import runtime as channel_runtime
from tidings.channels.sending import Carrier
from tidings.delivery import changes as delivery_changes
from tidings.delivery import middleware, plan_jobs
from tidings.delivery.audience import AudienceLoader
from tidings.delivery.cancellation import Cancellations
from tidings.delivery.carriers.email import EmailCarrier
from tidings.delivery.carriers.plugins import PluginCarrier
from tidings.delivery.digester import Digester
from tidings.delivery.digests import DIGEST_JOB
from tidings.delivery.dry_run import DryRun
from tidings.delivery.feedback import FeedbackConfig, FeedbackRecorder
from tidings.delivery.job_runner import Task
from tidings.delivery.pipeline import Pipeline
from tidings.delivery.retries import RetryPolicy
from tidings.delivery.send_jobs import AVAILABLE_CHANNELS, CHANNEL_JOB, EMAIL_JOB, IN_APP_JOB
from tidings.delivery.sender import Sender as DeliverySender
from tidings.delivery.service import DeliveryService, StopErased
from tidings.delivery.worker import Worker
from tidings.email.composer import EmailComposer, Sender
from tidings.email.dkim import DkimSigner
from tidings.email.providers.catcher import MailCatcher
from tidings.email.providers.factory import build_provider
from tidings.email.suppressions import Suppressions
from tidings.events.group_commit import GroupCommitter
from tidings.events.jobs import FANOUT_JOB, PLAN_JOB
from tidings.events.service import EventsService
from tidings.inbox.broadcasts import Broadcasts
from tidings.inbox.service import InboxService
from tidings.ingest.broker import BrokerIngest, IngestTopology
from tidings.kit import metrics, tracing
from tidings.kit.clock import Clock, SystemClock
from tidings.kit.db import Database
from tidings.kit.settings import Settings
from tidings.operations.dead_letters import DeadLetters
from tidings.operations.retention import Policy, Retention
from tidings.operations.timeline import Timelines
from tidings.preferences.service import PreferencesService
from tidings.users import erasure as user_erasure
from tidings.users.service import UsersService
from tidings.webhooks import outbox as webhook_outbox
from tidings.webhooks.sender import SendPolicy, WebhookSender
from tidings.webhooks.service import ForgetErased, WebhooksService


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
        middleware.standard(types, clock, inbox, users, measured, lease),
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
        cancellations=Cancellations(db, clock, events),
        dry_run=DryRun(db, clock, types, users, audience, counters, available),
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
