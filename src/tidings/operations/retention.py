"""Retention: what was sent long ago is removed in the background, a batch at a time.

Each pass selects a small batch of ids and deletes them by id in its own short
transaction, on PostgreSQL and SQLite alike, so no lock is held for long and the
pipeline keeps running beside it. Nothing with work still to do is touched: an event
waiting to be planned, or any of whose deliveries is still planned or scheduled, stays;
only deliveries in a final state expire.

Recorded erasures are forgotten once nothing can need them: made more than
``ERASURES_KEPT`` ago, and older than every event still waiting to be planned (an
erasure drops the user from the events accepted before it; once they are all planned,
it has done its work).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass, fields

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.delivery.states import DeliveryState
from tidings.kit.clock import Clock
from tidings.kit.db import Database
from tidings.kit.settings import Settings
from tidings.kit.tables import (
    broadcast_states,
    broadcasts,
    deliveries,
    delivery_transitions,
    digest_entries,
    erasures,
    events,
    idempotency_keys,
    inbox_items,
    webhook_attempts,
    webhook_messages,
)

log = logging.getLogger(__name__)

PENDING = frozenset({DeliveryState.PLANNED.value, DeliveryState.SCHEDULED.value})
"""Delivery states with work still to do: never expired."""
ERASURES_KEPT = dt.timedelta(days=7)
"""How long an erasure is kept at least, whatever the events: longer than any batch or
retried job that read its recipients before the erasure runs."""


@dataclass(frozen=True)
class Policy:
    """How long each kind of record is kept; ``None`` keeps it forever."""

    events: dt.timedelta | None
    deliveries: dt.timedelta | None
    inbox: dt.timedelta | None
    inbox_max_items: int | None
    batch_size: int = 500

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        """``retention_*_days``, ``inbox_max_items_per_user`` and ``retention_batch_size``."""

        def days(value: int) -> dt.timedelta | None:
            return dt.timedelta(days=value) if value > 0 else None

        return cls(
            events=days(settings.retention_events_days),
            deliveries=days(settings.retention_deliveries_days),
            inbox=days(settings.retention_inbox_days),
            inbox_max_items=settings.inbox_max_items_per_user or None,
            batch_size=settings.retention_batch_size,
        )


@dataclass
class Removed:
    """What one pass removed, per table."""

    events: int = 0
    idempotency_keys: int = 0
    deliveries: int = 0
    transitions: int = 0
    digest_entries: int = 0
    inbox_items: int = 0
    inbox_over_cap: int = 0
    broadcasts: int = 0
    webhook_messages: int = 0
    webhook_attempts: int = 0
    erasures: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @property
    def total(self) -> int:
        return sum(self.as_dict().values())


class Retention:
    """Removes expired events, deliveries and inbox items; see the module's docstring."""

    def __init__(self, db: Database, clock: Clock, policy: Policy, *, interval: float) -> None:
        self._db = db
        self._clock = clock
        self.policy = policy
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    async def run_once(self) -> Removed:
        """One full pass, batch after batch until nothing more has expired."""
        removed = Removed()
        now = self._clock.now()
        policy = self.policy
        if policy.deliveries is not None:
            await self._expire_deliveries(now - policy.deliveries, removed)
            await self._expire_webhook_messages(now - policy.deliveries, removed)
        if policy.events is not None:
            await self._expire_events(now - policy.events, removed)
            removed.idempotency_keys += await self._delete_batches(
                idempotency_keys,
                idempotency_keys.c.event_id,
                idempotency_keys.c.created_at < now - policy.events,
            )
        if policy.inbox is not None:
            removed.inbox_items += await self._delete_batches(
                inbox_items, inbox_items.c.id, inbox_items.c.created_at < now - policy.inbox
            )
            removed.broadcasts += await self._expire_broadcasts(now - policy.inbox)
        if policy.inbox_max_items is not None:
            removed.inbox_over_cap += await self._cap_inboxes(policy.inbox_max_items)
        removed.erasures += await self._forget_erasures(now)
        return removed

    def start(self) -> None:
        """Run a pass every ``interval`` seconds in the background, the first after one
        interval (a starting process has other things to do)."""
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="tidings-retention")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                removed = await self.run_once()
            except Exception:
                log.exception("retention pass failed; trying again at the next interval")
                continue
            if removed.total:
                log.info("retention removed %s", removed.as_dict())

    async def _expire_deliveries(self, cutoff: dt.datetime, removed: Removed) -> None:
        d = deliveries.c
        expired = (
            sa.select(d.id)
            .where(d.created_at < cutoff, d.state.not_in(PENDING))
            .limit(self.policy.batch_size)
        )
        while True:
            async with self._db.transaction() as conn:
                rows = (await conn.execute(expired)).all()
                if not rows:
                    return
                ids = [row.id for row in rows]
                removed.transitions += await _delete_in(
                    conn, delivery_transitions.c.delivery_id, ids
                )
                removed.deliveries += await _delete_in(conn, d.id, ids)
            if len(rows) < self.policy.batch_size:
                return

    async def _expire_webhook_messages(self, cutoff: dt.datetime, removed: Removed) -> None:
        """Status webhook messages that were answered or gave up, with their attempt log;
        those still waiting for an endpoint are kept."""
        m = webhook_messages.c
        expired = (
            sa.select(m.id)
            .where(m.created_at < cutoff, m.state != "pending")
            .limit(self.policy.batch_size)
        )
        while True:
            async with self._db.transaction() as conn:
                ids = [row.id for row in await conn.execute(expired)]
                removed.webhook_attempts += await _delete_in(
                    conn, webhook_attempts.c.message_id, ids
                )
                removed.webhook_messages += await _delete_in(conn, m.id, ids)
            if len(ids) < self.policy.batch_size:
                return

    async def _expire_events(self, cutoff: dt.datetime, removed: Removed) -> None:
        e = events.c
        d = deliveries.c
        expired = (
            sa.select(e.id)
            .where(
                e.created_at < cutoff,
                e.planned_at.is_not(None),
                ~sa.exists().where(d.event_id == e.id, d.state.in_(PENDING)),
                ~sa.exists().where(
                    digest_entries.c.event_id == e.id, digest_entries.c.digest_id.is_(None)
                ),
            )
            .limit(self.policy.batch_size)
        )
        while True:
            async with self._db.transaction() as conn:
                ids = [row.id for row in await conn.execute(expired)]
                if not ids:
                    return
                owned = [
                    row.id for row in await conn.execute(sa.select(d.id).where(d.event_id.in_(ids)))
                ]
                removed.transitions += await _delete_in(
                    conn, delivery_transitions.c.delivery_id, owned
                )
                removed.deliveries += await _delete_in(conn, d.id, owned)
                removed.digest_entries += await _delete_in(conn, digest_entries.c.event_id, ids)
                removed.events += await _delete_in(conn, e.id, ids)
            if len(ids) < self.policy.batch_size:
                return

    async def _forget_erasures(self, now: dt.datetime) -> int:
        """Erasures kept ``ERASURES_KEPT`` and older than every unplanned event: planning
        is all that reads an old erasure, and only for events accepted before it."""
        async with self._db.reader() as conn:
            oldest: dt.datetime | None = (
                await conn.execute(
                    sa.select(events.c.created_at)
                    .where(events.c.planned_at.is_(None))
                    .order_by(events.c.created_at)
                    .limit(1)
                )
            ).scalar_one_or_none()
        done = erasures.c.created_at < now - ERASURES_KEPT
        if oldest is not None:
            done = sa.and_(done, erasures.c.erased_before < oldest)
        return await self._delete_batches(erasures, erasures.c.pseudonym, done)

    async def _expire_broadcasts(self, cutoff: dt.datetime) -> int:
        """Broadcasts as old as the inbox items they stand for, with what each user did
        with them."""
        b = broadcasts.c
        expired = sa.select(b.id).where(b.created_at < cutoff).limit(self.policy.batch_size)
        total = 0
        while True:
            async with self._db.transaction() as conn:
                ids = [row.id for row in await conn.execute(expired)]
                await _delete_in(conn, broadcast_states.c.broadcast_id, ids)
                total += await _delete_in(conn, b.id, ids)
            if len(ids) < self.policy.batch_size:
                return total

    async def _delete_batches(
        self, table: sa.Table, key: sa.Column[str], condition: sa.ColumnElement[bool]
    ) -> int:
        """Delete the rows matching ``condition``, a batch of ``key`` values at a time."""
        total = 0
        batch = sa.select(key).where(condition).limit(self.policy.batch_size)
        while True:
            async with self._db.transaction() as conn:
                values = [row[0] for row in await conn.execute(batch)]
                total += await _delete_in(conn, key, values)
            if len(values) < self.policy.batch_size:
                return total

    async def _cap_inboxes(self, keep: int) -> int:
        """Keep each user's newest ``keep`` inbox items."""
        c = inbox_items.c
        over = (
            sa.select(c.user_id)
            .group_by(c.user_id)
            .having(sa.func.count() > keep)
            .limit(self.policy.batch_size)
        )
        total = 0
        while True:
            async with self._db.reader() as conn:
                users = [row.user_id for row in await conn.execute(over)]
            if not users:
                return total
            for user in users:
                oldest = (
                    sa.select(c.id)
                    .where(c.user_id == user)
                    .order_by(c.created_at.desc(), c.id.desc())
                    .offset(keep)
                    .limit(self.policy.batch_size)
                )
                while True:
                    async with self._db.transaction() as conn:
                        ids = [row.id for row in await conn.execute(oldest)]
                        total += await _delete_in(conn, c.id, ids)
                    if len(ids) < self.policy.batch_size:
                        break


async def _delete_in(conn: AsyncConnection, column: sa.Column[str], values: Sequence[str]) -> int:
    """Delete the rows of ``column``'s table whose ``column`` is one of ``values``."""
    if not values:
        return 0
    table = column.table
    assert isinstance(table, sa.Table)
    result = await conn.execute(table.delete().where(column.in_(list(values))))
    return int(result.rowcount or 0)
