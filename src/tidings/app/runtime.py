"""The Runtime: every long-lived object of one Tidings process, how it starts, says
whether its engines answer, and closes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import sqlalchemy as sa

from tidings import catalog
from tidings.auth.service import AuthService
from tidings.catalog.reload import CatalogReloader
from tidings.channels import runtime as channel_runtime
from tidings.channels.interface import Channel
from tidings.delivery.cancellation import Cancellations
from tidings.delivery.dry_run import DryRun
from tidings.delivery.feedback import FeedbackConfig, FeedbackRecorder
from tidings.delivery.pipeline import Pipeline
from tidings.delivery.service import DeliveryService
from tidings.delivery.worker import Worker
from tidings.email.composer import EmailComposer
from tidings.email.providers.base import EmailProvider
from tidings.email.providers.catcher import MailCatcher
from tidings.email.suppressions import Suppressions
from tidings.events.group_commit import GroupCommitter
from tidings.events.service import EventsService
from tidings.inbox.service import InboxService
from tidings.ingest.broker import BrokerIngest
from tidings.kit import metrics, migrate, outage
from tidings.kit.clock import Clock
from tidings.kit.counters import Counters
from tidings.kit.db import Database
from tidings.kit.live import LiveHub
from tidings.kit.queue import Queue
from tidings.kit.settings import Settings
from tidings.operations.dead_letters import DeadLetters
from tidings.operations.retention import Retention
from tidings.operations.timeline import Timelines
from tidings.preferences.service import PreferencesService
from tidings.users.service import UsersService
from tidings.webhooks.service import WebhooksService


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
    cancellations: Cancellations
    dry_run: DryRun
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
