"""Turns delivery state changes into webhook messages, in the transaction that made them.

The outbox listens to delivery state changes (``delivery.changes``, wired in
``app/wiring.py``): it hears every transition the delivery repository writes, in the
transaction that writes it. When no endpoint is registered that costs a look at an
in-memory list; otherwise the matching endpoints get one ``webhook_messages`` row each
and a ``webhook`` job, both committed with the state change or not at all (the outbox
rule).

The list of enabled endpoints is kept per process and read again every few seconds, or
at once after this process changed an endpoint: another process's change is heard
within ``cache_seconds``.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.auth import keys
from tidings.delivery.changes import Changed
from tidings.kit import ids
from tidings.kit.db import Database
from tidings.kit.queue import NewJob, Queue
from tidings.webhooks import repository

WEBHOOK_JOB = "webhook"
WEBHOOK_LANE = 3
"""Webhooks ride the low lane: a slow receiver never delays a notification."""
DELIVERY_UPDATED = "delivery.updated"

Transitions = Sequence[Mapping[str, Any]] | Callable[[], Sequence[Mapping[str, Any]]]
"""Transitions (``id``, ``delivery_id``, ``state``, ``reason``, ``detail``, ``at``), or a
function that makes them when someone listens."""


@dataclass(frozen=True)
class Listener:
    """An enabled endpoint as the outbox matches it."""

    id: str
    types: tuple[str, ...] | None
    states: frozenset[str] | None
    scopes: tuple[str, ...]
    """The owning key's scopes: an endpoint hears only of types its key may read."""

    def wants_state(self, state: str) -> bool:
        return self.states is None or state in self.states

    def wants_type(self, type_key: str) -> bool:
        """Whether the endpoint's filter and its key's scopes both cover ``type_key``."""
        if keys.OPERATOR_SCOPE not in self.scopes and not any(
            fnmatch.fnmatchcase(type_key, pattern) for pattern in self.scopes
        ):
            return False
        return self.types is None or any(
            fnmatch.fnmatchcase(type_key, pattern) for pattern in self.types
        )


def message_job(message_id: str, why: str) -> NewJob:
    """The job that sends one message; ``why`` (first try, a retry's number, what came
    before it) keeps jobs for the same message apart."""
    return NewJob(
        id=ids.derived_id(WEBHOOK_JOB, message_id, why),
        kind=WEBHOOK_JOB,
        payload={"message": message_id},
        lane=WEBHOOK_LANE,
    )


def delivery_payload(transition: Mapping[str, Any], delivery: Mapping[str, Any]) -> dict[str, Any]:
    """What a receiver gets for one transition of one delivery."""
    at: dt.datetime = transition["at"]
    return {
        "type": DELIVERY_UPDATED,
        "timestamp": at.isoformat(),
        "data": {
            "delivery_id": delivery["id"],
            "event_id": delivery["event_id"],
            "notification_type": delivery["type"],
            "user_id": delivery["user_id"],
            "channel": delivery["channel"],
            "state": transition["state"],
            "reason": transition.get("reason"),
            "detail": transition.get("detail"),
            "at": at.isoformat(),
        },
    }


class Outbox:
    """Writes the webhook messages of delivery transitions, for one process."""

    def __init__(self, queue: Queue, *, cache_seconds: float = 5.0) -> None:
        self._queue = queue
        self._cache_seconds = cache_seconds
        self._listeners: list[Listener] = []
        self._loaded_at: float | None = None

    def invalidate(self) -> None:
        """Read the endpoints again before the next change: one of them changed."""
        self._loaded_at = None

    async def listeners(self, conn: AsyncConnection) -> list[Listener]:
        """The enabled endpoints of live keys, read at most every ``cache_seconds``."""
        now = time.monotonic()
        if self._loaded_at is not None and now - self._loaded_at < self._cache_seconds:
            return self._listeners
        rows = await repository.listening_endpoints(conn)
        self._listeners = [
            Listener(
                id=row.id,
                types=None if row.types is None else tuple(row.types),
                states=None if row.states is None else frozenset(row.states),
                scopes=tuple(row.scopes),
            )
            for row in rows
        ]
        self._loaded_at = now
        return self._listeners

    async def heard(self, db: Database, conn: AsyncConnection, changed: Changed) -> None:
        """Deliveries changed state (a ``delivery.changes`` listener)."""
        await self.changed(db, conn, changed.transitions)

    async def changed(
        self,
        db: Database,
        conn: AsyncConnection,
        transitions: Transitions,
    ) -> None:
        """Queue a message to every endpoint that wants one of these transitions
        (``id``, ``delivery_id``, ``state``, ``reason``, ``detail``, ``at`` each).

        A transition's message id is derived from the transition's, so writing the same
        transition twice queues nothing new.
        """
        listeners = await self.listeners(conn)
        if not listeners:
            return
        if callable(transitions):
            transitions = transitions()
        wanted = [t for t in transitions if any(x.wants_state(t["state"]) for x in listeners)]
        if not wanted:
            return
        rows: list[dict[str, Any]] = []
        for transition in wanted:
            # Each transition carries its delivery (``delivery.changes``).
            delivery = transition["delivery"]
            for listener in listeners:
                if listener.wants_state(transition["state"]) and listener.wants_type(
                    delivery["type"]
                ):
                    rows.append(
                        {
                            "id": ids.new_id(),
                            "endpoint_id": listener.id,
                            "msg_id": f"msg_{transition['id']}",
                            "delivery_id": delivery["id"],
                            "event_id": delivery["event_id"],
                            "type": DELIVERY_UPDATED,
                            "payload": delivery_payload(transition, delivery),
                            "state": "pending",
                            "attempts": 0,
                            "next_attempt_at": transition["at"],
                            "created_at": transition["at"],
                            "updated_at": transition["at"],
                        }
                    )
        await self.add(db, conn, rows)

    async def add(
        self, db: Database, conn: AsyncConnection, rows: Sequence[Mapping[str, Any]]
    ) -> None:
        """Write messages (a repeated ``msg_id`` for an endpoint is ignored) and the
        jobs that send them."""
        if not rows:
            return
        # Only the rows this call wrote get a job: a message written before already has one.
        written = await repository.add_messages(db, conn, rows)
        await self._queue.enqueue(
            conn, [message_job(r["id"], "first") for r in rows if r["id"] in written]
        )
