"""The handler of digest timers: gathers due entries into one notification per digest."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from tidings import catalog
from tidings.delivery import digest_repository, digests, repository
from tidings.delivery.audience import Audience, AudienceLoader
from tidings.delivery.plan_rows import PlanningError, Rows, until
from tidings.delivery.repository import StateChange
from tidings.delivery.send_jobs import AVAILABLE_CHANNELS, CHANNEL_JOB, EMAIL_JOB
from tidings.delivery.states import DeliveryState
from tidings.inbox.service import InboxService
from tidings.kit import ids
from tidings.kit.clock import Clock
from tidings.kit.db import Database
from tidings.kit.queue import Job, NewJob, Queue
from tidings.planning import planner
from tidings.planning.rules import quiet_hours, staleness


class Digester:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        types: catalog.Catalog,
        queue: Queue,
        inbox: InboxService,
        audience: AudienceLoader,
        channels: Collection[str] = AVAILABLE_CHANNELS,
    ) -> None:
        self._db = db
        self._channels = frozenset(channels)
        self._clock = clock
        self._catalog = types
        self._queue = queue
        self._inbox = inbox
        self._audience = audience

    async def fire(self, jobs: Sequence[Job]) -> None:
        """Send every digest whose timer is among ``jobs``; all in one transaction."""
        now = self._clock.now()
        async with self._db.transaction() as conn:
            await repository.lock_users(self._db, conn, {j.payload["user"] for j in jobs})
            pending = await digest_repository.due_entries(
                conn, [(j.payload["user"], j.payload["key"]) for j in jobs], now
            )
            audience = await self._audience.load(
                conn,
                {user for user, _ in pending},
                {e["tenant"] for entries in pending.values() for e in entries},
            )
            rows = Rows()
            items: list[dict[str, Any]] = []
            for entries in pending.values():
                fresh = await self._drop_stale(conn, entries, rows, now)
                if not fresh:
                    continue
                digest = self._digest(fresh, now)
                await digest_repository.close(conn, digest, [e["id"] for e in fresh])
                self._deliver(digest, fresh, audience, rows, items, now)
            await rows.save(self._db, conn, self._queue, now)
            stored = await self._inbox.store(conn, items)
            await self._queue.complete(conn, jobs)
        self._queue.wake()
        await self._inbox.announce(stored)

    async def _drop_stale(
        self,
        conn: AsyncConnection,
        entries: Sequence[Mapping[str, Any]],
        rows: Rows,
        now: dt.datetime,
    ) -> list[Mapping[str, Any]]:
        """The entries still young enough for their type's ``max_age``; the others are
        taken out of every digest and their deliveries suppressed as stale."""
        ntype = self._catalog.get(entries[0]["type"])
        max_age = None if ntype is None else ntype.rules.max_age
        stale = [
            e
            for e in entries
            if staleness.is_stale(
                dt.datetime.fromisoformat(e["content"]["created_at"]), now, max_age
            )
        ]
        if not stale:
            return list(entries)
        await digest_repository.discard(conn, [e["id"] for e in stale])
        for e in stale:
            for delivery_id in _entry_deliveries(e, e["user_id"]):
                rows.changes.append(
                    StateChange(
                        delivery_id,
                        DeliveryState.SUPPRESSED,
                        planner.SuppressionReason.STALE.value,
                    )
                )
        return [e for e in entries if e not in stale]

    def _digest(self, entries: Sequence[Mapping[str, Any]], now: dt.datetime) -> dict[str, Any]:
        first = entries[0]
        return {
            # Derived from the first entry: a rerun after a rollback reads the same entries.
            "id": ids.derived_id(first["id"], digests.DIGEST_JOB),
            "user_id": first["user_id"],
            "tenant": first["tenant"],
            "type": first["type"],
            "digest_key": first["digest_key"],
            "count": len(entries),
            "items": [e["content"] for e in entries],
            "created_at": now,
        }

    def _deliver(
        self,
        digest: Mapping[str, Any],
        entries: Sequence[Mapping[str, Any]],
        audience: Audience,
        rows: Rows,
        items: list[dict[str, Any]],
        now: dt.datetime,
    ) -> None:
        """The digest's own notification and deliveries, and its entries' ``digested`` moves."""
        ntype = self._catalog.get(digest["type"])
        if ntype is None:
            raise PlanningError(f"type {digest['type']!r} is not in the catalog any more")
        user_id, digest_id = digest["user_id"], digest["id"]
        for e in entries:
            for delivery_id in _entry_deliveries(e, user_id):
                rows.changes.append(
                    StateChange(
                        delivery_id,
                        DeliveryState.DIGESTED,
                        detail=f"in digest {digest_id}",
                    )
                )
        recipient = audience.recipient(user_id)
        category = self._catalog.category(ntype.category)
        channels = sorted({c for e in entries for c in e["channels"]})
        facts = audience.facts(recipient, digest["tenant"], category, channels)
        quiet = audience.preferences_of(user_id, digest["tenant"]).quiet_hours.value
        critical = ntype.priority is catalog.Priority.CRITICAL
        for decision in planner.plan_recipient(channels, self._channels, recipient, facts):
            delivery_id = ids.derived_id(digest_id, decision.channel)
            common = {
                "delivery_id": delivery_id,
                # A digest stands for many events; its rows point at the digest itself.
                "notification_id": digest_id,
                "event_id": digest_id,
                "user_id": user_id,
                "type": digest["type"],
                "channel": decision.channel,
                "now": now,
            }
            if not decision.deliver:
                reason = decision.reason.value if decision.reason else None
                rows.delivery(state=DeliveryState.SUPPRESSED, reason=reason, detail=None, **common)
                continue
            silent = (
                quiet is not None
                and not critical
                and quiet_hours.is_quiet(now, quiet, recipient.timezone)
            )
            if decision.channel == planner.IN_APP:
                rows.delivery(state=DeliveryState.DELIVERED, reason=None, detail=None, **common)
                items.append(self._item(ntype, digest, recipient, delivery_id, now, silent))
                continue
            later = None
            if quiet is not None and not critical:
                later = quiet_hours.quiet_until(now, quiet, recipient.timezone)
            rows.delivery(
                state=DeliveryState.SCHEDULED,
                reason=planner.HoldReason.QUIET_HOURS.value if later else None,
                detail=until(later),
                **common,
            )
            kind = EMAIL_JOB if decision.channel == planner.EMAIL else CHANNEL_JOB
            payload = {"delivery": delivery_id, "digest": digest_id}
            if kind == CHANNEL_JOB:
                payload.update(user=user_id, channel=decision.channel)
            rows.jobs.append(
                NewJob(
                    id=f"{kind}:{delivery_id}",
                    kind=kind,
                    payload=payload,
                    lane=ntype.priority.lane,
                    run_at=later,
                )
            )

    def _item(
        self,
        ntype: catalog.NotificationType,
        digest: Mapping[str, Any],
        recipient: planner.Recipient,
        delivery_id: str,
        now: dt.datetime,
        silent: bool,
    ) -> dict[str, Any]:
        rule = digests.rule_of(ntype)
        content = ntype.render_digest(
            {"recipient": recipient.as_context(), "digest": digests.context(digest, rule)}, rule
        )
        return {
            "id": delivery_id,
            "user_id": recipient.id,
            "tenant": digest["tenant"],
            "event_id": digest["items"][0]["event_id"],
            "type": digest["type"],
            "category": ntype.category,
            "title": content.title,
            "body": content.body,
            "action_url": content.action_url,
            "actor": None,
            "created_at": now,
            "silent": silent,
        }


def _entry_deliveries(entry: Mapping[str, Any], user_id: str) -> list[str]:
    """The deliveries a digest entry stands for, one per channel. An entry planned by a
    release before ids kept their event's time names them by the id that release
    derived: both are tried, and the one that does not exist changes nothing."""
    found = []
    for channel in entry["channels"]:
        parts = (entry["event_id"], user_id, channel)
        found.append(ids.derived_id(*parts))
        if (legacy := ids.legacy_derived_id(*parts)) != found[-1]:
            found.append(legacy)
    return found
