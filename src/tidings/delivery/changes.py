"""Delivery state changes as events: the repository tells, the listeners wired in
``app/wiring.py`` hear.

The delivery repository writes deliveries and their transitions and no other package's
tables. Each time it commits deliveries to a state (new ones in their first states, or
changes of state) it tells the listeners attached to its database, inside the same
transaction: the webhooks' outbox writes its messages there, so a webhook exists exactly
when the change does; the metrics count. A listener that writes must write in ``conn``.

Telling costs nothing when no one listens, and the transitions' rows are made only if a
listener asks for them (``Changed.transitions``).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.kit import metrics
from tidings.kit.db import Database


@dataclass(frozen=True)
class Entered:
    """One delivery entered ``state`` (a ``DeliveryState`` value) on ``channel``."""

    channel: str
    state: str
    reason: str | None


@dataclass(frozen=True)
class Changed:
    """Deliveries that entered a state in one transaction."""

    entered: Sequence[Entered]
    make_transitions: Callable[[], Sequence[Mapping[str, Any]]]
    """Makes the transitions (``id``, ``delivery_id``, ``state``, ``reason``, ``detail``,
    ``at``, and ``delivery``: its ``id``, ``event_id``, ``user_id``, ``channel`` and
    ``type``), only if asked: a listener needs no other package's table to know what
    changed."""

    def transitions(self) -> Sequence[Mapping[str, Any]]:
        return self.make_transitions()


class Listener(Protocol):
    async def heard(self, db: Database, conn: AsyncConnection, changed: Changed) -> None:
        """Deliveries changed in ``conn``'s transaction, which is not committed yet."""
        ...


_listeners: weakref.WeakKeyDictionary[Database, list[Listener]] = weakref.WeakKeyDictionary()


def listen(db: Database, listener: Listener) -> None:
    """Have ``listener`` hear of every delivery change written through ``db``."""
    _listeners.setdefault(db, []).append(listener)


def listeners(db: Database) -> list[Listener]:
    """Who hears of ``db``'s delivery changes, in the order they were attached."""
    return list(_listeners.get(db, ()))


async def tell(db: Database, conn: AsyncConnection, changed: Changed) -> None:
    """Hand a change just written through ``db`` to its listeners, in order."""
    for listener in _listeners.get(db, ()):
        await listener.heard(db, conn, changed)


class Counted:
    """The metrics' listener: counts each delivery entering a state, by channel, state
    and reason (``tidings_deliveries_total``)."""

    def __init__(self, measured: metrics.Metrics) -> None:
        self._measured = measured

    async def heard(self, db: Database, conn: AsyncConnection, changed: Changed) -> None:
        for one in changed.entered:
            self._measured.delivery_state(one.channel, one.state, one.reason)
