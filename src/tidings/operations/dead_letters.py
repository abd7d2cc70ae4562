"""Dead letters: jobs given up on after their retries, to inspect, replay or discard.

A replay deletes the dead letter and enqueues its job again, with fresh attempts, in one
transaction, through the process's own queue (the database queue, or the JetStream
outbox). Every handler derives its effects' ids from what the job does, so a job that
already did its work does nothing the second time: replaying twice delivers once.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.delivery.service import DeliveryService, StateChange
from tidings.delivery.states import DeliveryState
from tidings.kit import cursors, errors
from tidings.kit.clock import Clock
from tidings.kit.db import Database
from tidings.kit.queue import NewJob, Queue
from tidings.operations import repository

REPLAYED = "replayed"
REPLAY_STAGE = "replay"
"""The stage a replay's own transitions are recorded under."""
# Jobs that carry one delivery, which they act on only while it is scheduled.
_DELIVERY_JOBS = frozenset({"email", "in_app", "channel"})


class DeadLetters:
    """Lists, replays and discards dead letters."""

    def __init__(self, db: Database, clock: Clock, queue: Queue) -> None:
        self._db = db
        self._clock = clock
        self._queue = queue
        self._deliveries = DeliveryService(db)

    async def page(
        self, kind: str | None, cursor: str | None, limit: int
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Dead letters in id order, optionally of one kind; and the next page's cursor."""
        async with self._db.reader() as conn:
            rows = await repository.page(conn, kind, cursors.after_id(cursor), limit + 1)
        return rows[:limit], (rows[limit - 1]["id"] if len(rows) > limit else None)

    async def get(self, dead_letter_id: str) -> dict[str, Any]:
        """One dead letter.

        Raises:
            errors.NotFound: no dead letter with this id (replayed or discarded already).
        """
        async with self._db.reader() as conn:
            row = await repository.one(conn, dead_letter_id)
        if row is None:
            raise _not_found(dead_letter_id)
        return row

    async def replay(self, dead_letter_id: str, *, stage: str = REPLAY_STAGE) -> dict[str, Any]:
        """Enqueue one dead letter's job again and forget the dead letter; returns it.

        Raises:
            errors.NotFound: no dead letter with this id (replayed or discarded already).
        """
        async with self._db.transaction() as conn:
            row = await repository.one(conn, dead_letter_id, lock=self._db.is_postgres)
            if row is None:
                raise _not_found(dead_letter_id)
            await self._requeue(conn, [row], stage)
        self._queue.wake([row["lane"]])
        return row

    async def replay_kind(self, kind: str, *, batch: int = 500, stage: str = REPLAY_STAGE) -> int:
        """Replay every dead letter of ``kind``, a batch per transaction; returns how many."""
        replayed = 0
        while True:
            async with self._db.transaction() as conn:
                rows = await repository.of_kind(conn, kind, batch, lock=self._db.is_postgres)
                await self._requeue(conn, rows, stage)
            if rows:
                self._queue.wake({row["lane"] for row in rows})
            replayed += len(rows)
            if len(rows) < batch:
                return replayed

    async def discard(self, dead_letter_id: str) -> None:
        """Forget one dead letter without running its job.

        Raises:
            errors.NotFound: no dead letter with this id.
        """
        async with self._db.transaction() as conn:
            removed = await repository.remove(conn, [dead_letter_id])
        if not removed:
            raise _not_found(dead_letter_id)

    async def count(self) -> dict[str, int]:
        """How many dead letters wait, per kind."""
        async with self._db.reader() as conn:
            return await repository.count_by_kind(conn)

    async def _requeue(
        self, conn: AsyncConnection, rows: Sequence[dict[str, Any]], stage: str
    ) -> None:
        if not rows:
            return
        now = self._clock.now()
        await repository.remove(conn, [r["id"] for r in rows])
        await self._queue.enqueue(
            conn,
            [
                NewJob(id=r["id"], kind=r["kind"], payload=r["payload"], lane=r["lane"])
                for r in rows
            ],
        )
        # A delivery job gave up with its delivery failed; it is scheduled again so the
        # replayed job sends it. One that moved on since (sent, bounced) stays as it is,
        # and the job then finds nothing to do.
        await self._deliveries.advance(
            conn,
            [
                StateChange(
                    r["payload"]["delivery"],
                    DeliveryState.SCHEDULED,
                    REPLAYED,
                    f"dead letter {r['id']} replayed after {r['attempts']} attempts: "
                    f"{r['error'][:300]}",
                    stage=stage,
                    key=f"{REPLAYED}@{_instant(r['failed_at'])}",
                )
                for r in rows
                if r["kind"] in _DELIVERY_JOBS and isinstance(r["payload"].get("delivery"), str)
            ],
            now,
        )


def _instant(at: dt.datetime) -> str:
    return at.isoformat()


def _not_found(dead_letter_id: str) -> errors.NotFound:
    return errors.NotFound(
        f"No dead letter with id {dead_letter_id!r}: it was replayed or discarded already, "
        "or never existed.",
        field="id",
    )
