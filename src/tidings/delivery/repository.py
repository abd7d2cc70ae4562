"""SQL that writes deliveries and their transitions (a notification is its deliveries).

The plan's deliveries are recorded, and their changes of state applied and logged where
the state machine allows them (a user's still to send are stopped when they are erased);
the sender, the planner and feedback find here the deliveries they change. Reading
deliveries with their history, for the API, is ``history_repository``'s.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.delivery.changes import Changed, Entered, tell
from tidings.delivery.states import ALLOWED, DeliveryState, first_transitions
from tidings.delivery.stopping_repository import not_claimed
from tidings.kit import ids, job_context
from tidings.kit.db import Database, among
from tidings.kit.tables import UTCDateTime, deliveries, delivery_transitions, inbox_items


async def record(
    db: Database,
    conn: AsyncConnection,
    delivery_rows: Sequence[Mapping[str, Any]],
    items: Sequence[Mapping[str, Any]] = (),
) -> None:
    """Write the plan's deliveries, each in its first state. Every id is derived, so
    writing them twice changes nothing. ``items`` are in-app deliveries that are their
    inbox item (``tables.every_delivery``): not written, but counted and heard of.

    No transition is written: a delivery's row is its first state until it changes, and
    the change logs where it started (``log_first_states``). Webhook listeners still hear
    of the first states now, as transitions stamped with the running job's stage.
    """
    await db.insert_rows_ignore(conn, deliveries, delivery_rows)
    made = [*delivery_rows, *items]
    stage, attempt = origin()

    def transitions() -> list[dict[str, Any]]:
        steps = first_transitions(made, stage=stage, attempt=attempt)
        about = {row["id"]: row for row in made}
        return [{**step, "delivery": about[step["delivery_id"]]} for step in steps]

    entered = [
        Entered(row["channel"], _state_value(row["state"]), row.get("reason")) for row in made
    ]
    await tell(db, conn, Changed(entered, transitions))


def _state_value(state: Any) -> str:
    """A state as stored: rows carry ``DeliveryState`` members or their values."""
    return str(getattr(state, "value", state))


async def log_first_states(
    db: Database, conn: AsyncConnection, delivery_ids: Sequence[str]
) -> None:
    """Before these deliveries change, log the first state of those that have not changed
    yet. A delivery with no transition is still as planned (every change logs one in its
    own transaction), so its row says where it started; two writers racing log the same
    derived ids, and the second changes nothing."""
    d, t = deliveries.c, delivery_transitions.c
    unchanged: list[Mapping[str, Any]] = []
    for start in range(0, len(delivery_ids), 500):
        found = await conn.execute(
            sa.select(d.id, d.state, d.reason, d.detail, d.created_at).where(
                d.id.in_(list(delivery_ids[start : start + 500])),
                ~sa.exists().where(t.delivery_id == d.id),
            )
        )
        unchanged.extend(dict(row._mapping) for row in found)
    if unchanged:
        await db.insert_rows_ignore(
            conn, delivery_transitions, first_transitions(unchanged, stage=PLANNING_STAGE)
        )


PLANNING_STAGE = "plan"
"""The stage named in a first state logged when the delivery changes: planning made it."""


def origin(stage: str | None = None) -> tuple[str, int | None]:
    """Which stage and attempt a change is made by: ``stage`` when the caller names one
    (``feedback``, ``replay``), else the running job's kind and attempt, else ``api``."""
    run = job_context.current()
    if stage is not None:
        return stage, None if run is None else run.attempt
    if run is not None:
        return run.stage, run.attempt
    return "api", None


@dataclass(frozen=True)
class StateChange:
    """Move one delivery to ``target``, if the state machine allows it from where it is."""

    delivery_id: str
    target: DeliveryState
    reason: str | None = None
    detail: str | None = None
    attempt: int = 1
    fields: Mapping[str, Any] = field(default_factory=dict)
    stage: str | None = None
    """Who made the change when it is not the running job (``feedback``, ``replay``)."""
    key: str | None = None
    """Names this transition apart from others to the same state and attempt."""


async def advance(
    db: Database,
    conn: AsyncConnection,
    changes: Sequence[StateChange],
    now: dt.datetime,
    *,
    unclaimed: bool = False,
) -> list[str]:
    """Apply state changes and log their transitions; returns the ids that moved.

    A change the state machine forbids from the delivery's current state (a late "sent"
    after a "bounced", a replayed job) changes nothing; with ``unclaimed``, neither does
    a change to a delivery a sender has claimed (``claim``). Any change ends a claim. On
    PostgreSQL, changes to distinct deliveries are applied a group at a time (one
    ``UPDATE … FROM unnest(…)`` per target state and set of fields); several changes to
    one delivery apply in order.
    """
    if not changes:
        return []
    await log_first_states(db, conn, list(dict.fromkeys(c.delivery_id for c in changes)))
    if db.is_postgres and len({c.delivery_id for c in changes}) == len(changes):
        rows = await _update_together(conn, changes, now, unclaimed=unclaimed)
    else:
        rows = [await _update_one(conn, change, now, unclaimed=unclaimed) for change in changes]
    moved: list[str] = []
    entered: list[Entered] = []
    written: list[dict[str, Any]] = []
    logged: list[dict[str, Any]] = []
    for change, delivery in zip(changes, rows, strict=True):
        if delivery is None:
            continue
        moved.append(change.delivery_id)
        entered.append(Entered(delivery["channel"], change.target.value, change.reason))
        stage, attempt = origin(change.stage)
        transition = {
            "id": ids.derived_id(
                change.delivery_id, change.target.value, change.key or str(change.attempt)
            ),
            "delivery_id": change.delivery_id,
            "state": change.target.value,
            "reason": change.reason,
            "detail": change.detail,
            "at": now,
        }
        written.append({**transition, "delivery": delivery})
        logged.append({**transition, "stage": stage, "attempt": attempt})
    await db.insert_rows_ignore(conn, delivery_transitions, logged)
    await tell(db, conn, Changed(entered, lambda: written))
    return moved


def _sources(target: DeliveryState) -> list[str]:
    """The states a delivery may move to ``target`` from."""
    return [state.value for state, nxt in ALLOWED.items() if target in nxt]


_MOVED = tuple(deliveries.c[name] for name in ("id", "event_id", "user_id", "channel", "type"))
"""What a change returns of each delivery it moved: what its listeners are told the
delivery is (``delivery.changes``)."""


async def _update_one(
    conn: AsyncConnection, change: StateChange, now: dt.datetime, *, unclaimed: bool = False
) -> dict[str, Any] | None:
    """Apply one change; the delivery (``_MOVED``) if it moved."""
    where = [deliveries.c.id == change.delivery_id, deliveries.c.state.in_(_sources(change.target))]
    if unclaimed:
        where.append(not_claimed(now))
    result = await conn.execute(
        deliveries.update()
        .where(*where)
        .values(
            state=change.target.value,
            reason=change.reason,
            detail=change.detail,
            updated_at=now,
            claimed_until=None,
            **change.fields,
        )
        .returning(*_MOVED)
    )
    row = result.first()
    return None if row is None else dict(row._mapping)


# Fields a change may set that are sent as text arrays in a grouped update.
_TEXT_FIELDS = frozenset({"message_id", "provider", "provider_message_id"})


async def _update_together(
    conn: AsyncConnection, changes: Sequence[StateChange], now: dt.datetime, *, unclaimed: bool
) -> list[dict[str, Any] | None]:
    """Apply changes to distinct deliveries on PostgreSQL, one statement per target
    state and set of fields; each change's delivery (as ``_update_one``) if it moved."""
    groups: dict[tuple[DeliveryState, tuple[str, ...]], list[int]] = {}
    found: list[dict[str, Any] | None] = [None] * len(changes)
    for position, change in enumerate(changes):
        names = tuple(sorted(change.fields))
        if not _TEXT_FIELDS.issuperset(names):
            found[position] = await _update_one(conn, change, now, unclaimed=unclaimed)
            continue
        groups.setdefault((change.target, names), []).append(position)
    for (target, names), positions in groups.items():
        picked = [changes[p] for p in positions]
        columns = ("id", "reason", "detail", *names)
        sets = ", ".join(f"{name} = u.{name}" for name in ("reason", "detail", *names))
        arrays = ", ".join(f"CAST(:a{n} AS TEXT[])" for n in range(len(columns)))
        statement = sa.text(
            f"UPDATE deliveries AS d SET state = :target, {sets}, updated_at = :now, "
            f"claimed_until = NULL FROM unnest({arrays}) AS u({', '.join(columns)}) "
            "WHERE d.id = u.id AND d.state = ANY(CAST(:sources AS TEXT[])) "
            + ("AND (d.claimed_until IS NULL OR d.claimed_until <= :now) " if unclaimed else "")
            + "RETURNING d.id, d.event_id, d.user_id, d.channel, d.type"
        ).bindparams(sa.bindparam("now", type_=UTCDateTime()))
        values: dict[str, Any] = {
            "target": target.value,
            "now": now,
            "sources": _sources(target),
            "a0": [c.delivery_id for c in picked],
            "a1": [c.reason for c in picked],
            "a2": [c.detail for c in picked],
        }
        for n, name in enumerate(names, 3):
            values[f"a{n}"] = [c.fields[name] for c in picked]
        moved = {row.id: dict(row._mapping) for row in await conn.execute(statement, values)}
        for position, change in zip(positions, picked, strict=True):
            found[position] = moved.get(change.delivery_id)
    return found


async def get_many(conn: AsyncConnection, delivery_ids: Sequence[str]) -> list[dict[str, Any]]:
    rows = await conn.execute(sa.select(deliveries).where(deliveries.c.id.in_(list(delivery_ids))))
    return [dict(r._mapping) for r in rows]


async def find_by_message(
    conn: AsyncConnection, *, message_id: str | None, provider_message_id: str | None
) -> dict[str, Any] | None:
    """The email delivery a provider's feedback speaks of."""
    conditions = []
    if message_id:
        conditions.append(deliveries.c.message_id == message_id)
    if provider_message_id:
        conditions.append(deliveries.c.provider_message_id == provider_message_id)
    if not conditions:
        return None
    row = (await conn.execute(sa.select(deliveries).where(sa.or_(*conditions)).limit(1))).first()
    return None if row is None else dict(row._mapping)


async def planned_recipients(
    conn: AsyncConnection, pairs: Sequence[tuple[str, str]]
) -> set[tuple[str, str]]:
    """Those (event, recipient) pairs whose notification planning already recorded: one
    delivery of it is enough (a notification is its deliveries)."""
    found: set[tuple[str, str]] = set()
    wanted = set(pairs)
    for start in range(0, len(pairs), 1000):
        chunk = pairs[start : start + 1000]
        events, users = {event for event, _ in chunk}, {user for _, user in chunk}
        # An in-app delivery that is its item has no row: the item tells.
        for table in (deliveries, inbox_items):
            rows = await conn.execute(
                sa.select(table.c.event_id, table.c.user_id)
                .where(
                    among(conn, table.c.event_id, sorted(events)),
                    among(conn, table.c.user_id, sorted(users)),
                )
                .distinct()
            )
            found.update(pair for pair in ((r.event_id, r.user_id) for r in rows) if pair in wanted)
    return found


async def lock_users(db: Database, conn: AsyncConnection, user_ids: Collection[str]) -> None:
    """Serialise planning per recipient until the transaction ends.

    Dedup, throttle, collapse and digests read a recipient's state, decide, and write it
    back; two PostgreSQL workers planning for one person at once would both read the same
    state. Locks are taken in one order, so two batches cannot deadlock on them. SQLite
    has a single writer and needs none.
    """
    if not db.is_postgres or not user_ids:
        return
    await conn.execute(
        sa.text(
            "SELECT count(pg_advisory_xact_lock(k)) FROM ("
            " SELECT DISTINCT hashtextextended(u, 7411) AS k"
            " FROM unnest(CAST(:users AS text[])) AS u ORDER BY k) AS keys"
        ),
        {"users": sorted(set(user_ids))},
    )
