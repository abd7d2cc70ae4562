"""Ingest: validate, enforce idempotency, store, and enqueue planning — all in one commit."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import sqlalchemy as sa
from opentelemetry import context as otel_context
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings import catalog
from tidings.auth import keys
from tidings.auth.keys import ApiKey
from tidings.events import repository, schemas
from tidings.events.jobs import planning_jobs
from tidings.kit import errors, ids, metrics, tracing
from tidings.kit.clock import Clock, in_utc
from tidings.kit.db import Database, ran_into_another
from tidings.kit.queue import Queue
from tidings.users.service import UsersService

_LATER_FIELDS = frozenset({"send_at", "cancellation_key"})
"""Event fields added after the first release."""
SEND_AT_HORIZON = dt.timedelta(days=365)
"""How far from now an event's ``send_at`` may be, ahead or past."""
_WRITE_ATTEMPTS = 4
_PG_GROUP_WRITERS = 3
"""Group commits written at once on PostgreSQL: a small share of the pool (10)."""


@dataclass
class Prepared:
    """An event that passed validation, ready to be written."""

    event_id: str
    tenant: str
    idempotency_key: str
    namespace: str
    """Whose idempotency keys this one is among: the id of the API key that published it."""
    body_hash: str
    lane: int
    row: dict[str, Any]
    profiles: list[dict[str, Any]] = field(default_factory=list)
    trace: dict[str, str] | None = None
    """The trace context of the request that published it, for its planning job."""


@dataclass(frozen=True)
class Outcome:
    """What became of one prepared event: accepted, replayed, or a conflict."""

    event_id: str
    replayed: bool = False
    conflict: errors.Conflict | None = None


class EventsService:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        types: catalog.Catalog,
        queue: Queue,
        users: UsersService,
    ) -> None:
        self._db = db
        self._clock = clock
        self._catalog = types
        self._queue = queue
        self._users = users

    @property
    def concurrent_writers(self) -> int:
        """How many group commits may write at once: one on SQLite, whose writes share one
        connection; a few on PostgreSQL, each on its own connection of the pool."""
        return _PG_GROUP_WRITERS if self._db.is_postgres else 1

    def deprecation_headers(self, type_keys: Iterable[str]) -> dict[str, str]:
        """``Deprecation``, ``Sunset`` and ``Warning`` for an answer that published
        ``type_keys``; empty when none of them is deprecated."""
        found = (self._catalog.get(key) for key in set(type_keys))
        return catalog.deprecation_headers(t for t in found if t is not None)

    def prepare(
        self, key: ApiKey, event: schemas.EventIn, field_prefix: str = "", *, counted: bool = True
    ) -> Prepared:
        """Check one event against its type and the key's scopes; a refusal is counted
        in the metrics unless not ``counted`` (a dry run's).

        Raises:
            errors.Forbidden: the key may not publish this type.
            errors.Invalid: unknown type, no audience, or a payload that breaks the schema.
        """
        try:
            return self._prepare(key, event, field_prefix)
        except errors.TidingsError as exc:
            if not counted:
                raise
            known = event.type if self._catalog.get(event.type) is not None else None
            metrics.of(self._db).event_rejected(known or metrics.UNKNOWN_TYPE, exc.code)
            raise

    def _prepare(self, key: ApiKey, event: schemas.EventIn, field_prefix: str) -> Prepared:
        ntype = self._catalog.get(event.type)
        if ntype is None:
            raise errors.Invalid(
                f"Unknown notification type {event.type!r}; declare it in the catalog first.",
                field=field_prefix + "type",
            )
        if not key.may_publish(event.type):
            raise errors.Forbidden(
                f"The key {key.name!r} may publish {', '.join(key.scopes)}, not {event.type!r}.",
                field=field_prefix + "type",
            )
        if (event.recipients is None) == (event.topic is None):
            raise errors.Invalid(
                "Give either 'recipients' or 'topic', not both and not neither.",
                field=field_prefix + "recipients",
            )
        # An event's data passed json_input.check: the HTTP body's or its own (EventIn).
        problems = ntype.validate_payload(event.data, bounded=True)
        if problems:
            first = problems[0]
            raise errors.Invalid(
                f"{first.message} (type {event.type!r}).",
                field=field_prefix + first.path,
                problems=[{"field": field_prefix + p.path, "message": p.message} for p in problems],
            )
        send_at = self._send_at(event, field_prefix)
        body = stored_body(event)
        body_hash = hash_of(body)
        event_id = ids.new_id()
        recipients = event.recipients or []
        carried = {
            r.id: r.model_dump(mode="json", exclude_unset=True, exclude={"id"})
            for r in recipients
            if r.model_fields_set - {"id"}
        }
        # Only a key that may write profiles stores what its events carry; any other key's
        # fields serve this event's deliveries and change no one's stored profile.
        stores_profiles = key.has(keys.USERS_WRITE)
        return Prepared(
            event_id=event_id,
            tenant=event.tenant,
            idempotency_key=event.idempotency_key,
            namespace=key.id,
            body_hash=body_hash,
            lane=ntype.priority.lane,
            row={
                "id": event_id,
                "tenant": event.tenant,
                "type": event.type,
                "idempotency_key": event.idempotency_key,
                "actor": body["actor"],
                "recipients": [r.id for r in recipients] if event.recipients is not None else None,
                "topic": event.topic,
                "data": body["data"],
                "api_key_id": key.id,
                "recipient_profiles": None if stores_profiles or not carried else carried,
                "send_at": send_at,
                "cancellation_key": event.cancellation_key,
            },
            profiles=[{"id": uid, **fields} for uid, fields in carried.items()]
            if stores_profiles
            else [],
            # Outside any trace (tracing off) there is nothing to carry: not asked.
            trace=tracing.current_headers() if otel_context.get_current() else None,
        )

    def _send_at(self, event: schemas.EventIn, field_prefix: str) -> dt.datetime | None:
        """The event's ``send_at`` in UTC, if it has one within ``SEND_AT_HORIZON``.

        Raises:
            errors.Invalid: it is more than the horizon away from now, either way.
        """
        if event.send_at is None:
            return None
        field = field_prefix + "send_at"
        at = in_utc(event.send_at, field)
        if abs(at - self._clock.now()) > SEND_AT_HORIZON:
            raise errors.Invalid(
                f"'send_at' may be at most {SEND_AT_HORIZON.days} days from now; "
                f"{at.isoformat()} is not. Publish it closer to its time.",
                field=field,
            )
        return at

    async def publish(self, prepared: Sequence[Prepared]) -> list[Outcome]:
        """Write a batch atomically: every event is stored, or none is.

        Raises:
            errors.Conflict: an idempotency key was reused with a different body.
        """
        return await self.write_group(prepared, atomic=True)

    async def write_group(self, prepared: Sequence[Prepared], *, atomic: bool) -> list[Outcome]:
        """Write events in one transaction and wake the planner after the commit.

        With ``atomic`` a conflict aborts the whole group; without it, conflicting events
        are reported and the rest are written (the group commit of single requests).
        """
        for attempt in range(1, _WRITE_ATTEMPTS + 1):
            try:
                async with self._db.transaction() as conn:
                    outcomes = await self._write(conn, prepared, atomic=atomic)
                break
            except sa.exc.IntegrityError:
                # A concurrent request claimed one of the keys between our read and our
                # insert: run again, now seeing its row, and replay or conflict accordingly.
                if attempt == _WRITE_ATTEMPTS:
                    raise
            except sa.exc.DBAPIError as exc:
                # Two writers took the same recipients' rows in another order: PostgreSQL
                # aborted one of them. Nothing was written; write it again.
                if not ran_into_another(exc) or attempt == _WRITE_ATTEMPTS:
                    raise
        # Wake only the loops of lanes that got work: the others would claim nothing.
        lanes = {
            item.lane
            for item, outcome in zip(prepared, outcomes, strict=True)
            if outcome.event_id == item.event_id and not outcome.replayed
        }
        if lanes:
            self._queue.wake(lanes)
        measured = metrics.of(self._db)
        for item, outcome in zip(prepared, outcomes, strict=True):
            if outcome.conflict is not None:
                measured.event_rejected(item.row["type"], outcome.conflict.code)
            else:
                measured.event_accepted(item.row["type"], replayed=outcome.replayed)
        return outcomes

    async def _write(
        self, conn: AsyncConnection, prepared: Sequence[Prepared], *, atomic: bool
    ) -> list[Outcome]:
        now = self._clock.now()
        known = await repository.existing_keys(conn, (_claim(p) for p in prepared))
        outcomes: list[Outcome] = []
        fresh: list[Prepared] = []
        for index, item in enumerate(prepared):
            seen = known.get(_claim(item))
            if seen is None:
                known[_claim(item)] = (item.body_hash, item.event_id)
                fresh.append(item)
                outcomes.append(Outcome(item.event_id))
            elif seen[0] == item.body_hash:
                outcomes.append(Outcome(seen[1], replayed=True))
            else:
                conflict = errors.Conflict(
                    f"The idempotency key {item.idempotency_key!r} was already used with a "
                    "different event; use a new key for a new event.",
                    field=("events." + str(index) + "." if atomic and len(prepared) > 1 else "")
                    + "idempotency_key",
                    event_id=seen[1],
                )
                if atomic:
                    raise conflict
                outcomes.append(Outcome(seen[1], conflict=conflict))
        if not fresh:
            return outcomes
        await repository.insert(
            conn,
            [{**p.row, "created_at": now} for p in fresh],
            [
                {
                    "tenant": p.tenant,
                    "namespace": p.namespace,
                    "key": p.idempotency_key,
                    "body_hash": p.body_hash,
                    "event_id": p.event_id,
                    "created_at": now,
                }
                for p in fresh
            ],
        )
        await self._users.upsert_profiles(conn, [pr for p in fresh for pr in p.profiles])
        await self._queue.enqueue(conn, planning_jobs(fresh, now))
        return outcomes

    def now(self) -> dt.datetime:
        return self._clock.now()

    async def get(self, event_id: str) -> Mapping[str, Any]:
        async with self._db.reader() as conn:
            row = await repository.get(conn, event_id)
        if row is None:
            raise errors.NotFound(f"No event with id {event_id!r}.", field="event_id")
        return row

    async def load(
        self, conn: AsyncConnection, event_ids: Sequence[str], *, to_plan: bool = False
    ) -> list[Mapping[str, Any]]:
        """Events by id, in the caller's transaction. ``to_plan``: held against a
        cancellation until the transaction ends (``repository.get_many``), so that
        planning either finishes first or sees the event cancelled."""
        return await repository.get_many(conn, event_ids, against_cancel=to_plan)

    async def lock_to_cancel(
        self, conn: AsyncConnection, event_ids: Sequence[str]
    ) -> list[Mapping[str, Any]]:
        """``repository.lock_to_cancel``."""
        return await repository.lock_to_cancel(conn, event_ids)

    async def by_cancellation_key(
        self, conn: AsyncConnection, key: ApiKey, cancellation_key: str, limit: int
    ) -> list[tuple[str, bool]]:
        """Up to ``limit`` (id, cancelled already) of the events ``key`` published with
        ``cancellation_key``, those not cancelled yet first."""
        return await repository.ids_by_cancellation_key(conn, key.id, cancellation_key, limit)

    async def mark_cancelled(self, conn: AsyncConnection, event_ids: Sequence[str]) -> None:
        if event_ids:
            await repository.mark_cancelled(conn, event_ids, self._clock.now())

    async def mark_planned(self, conn: AsyncConnection, event_ids: Sequence[str]) -> None:
        if event_ids:
            await repository.mark_planned(conn, event_ids, self._clock.now())


def stored_body(event: schemas.EventIn) -> dict[str, Any]:
    """The event as JSON, as its body hash is taken. Fields added since events were
    first stored count only when set: the same event published before and after an
    upgrade has the same hash (a replay, not a conflict)."""
    unset = {name for name in _LATER_FIELDS if getattr(event, name) is None}
    return event.model_dump(mode="json", exclude=unset)


def hash_of(body: Mapping[str, Any]) -> str:
    """The hash kept beside an idempotency key."""
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def recipient_profile(
    event: Mapping[str, Any] | None, user_id: str, stored: Mapping[str, Any] | None
) -> Mapping[str, Any] | None:
    """The profile ``user_id`` has for ``event``'s deliveries: the stored one, with the
    fields the event carried for them on top when its key could not store them."""
    carried = (event or {}).get("recipient_profiles") or {}
    fields = carried.get(user_id)
    if not fields:
        return stored
    return {**(stored or {}), **fields}


def carried_addresses(events: Iterable[Mapping[str, Any]]) -> set[str]:
    """The email addresses events carried for their recipients without storing them (to
    check against the suppression list with the stored ones)."""
    return {
        fields["email"]
        for event in events
        for fields in (event.get("recipient_profiles") or {}).values()
        if fields.get("email")
    }


def _claim(item: Prepared) -> tuple[str, str, str]:
    """An idempotency key as stored: per tenant and per API key."""
    return (item.tenant, item.namespace, item.idempotency_key)
