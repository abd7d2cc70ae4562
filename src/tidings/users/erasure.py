"""Erasing a user, told to the packages that keep something of theirs.

``UsersService.erase`` tells the listeners attached to its database (in
``app/wiring.py``), inside the erasure's transaction and before the user's own rows go:
the webhooks rename the user in their messages, the deliveries still to send are
stopped. A listener writes its own package's tables, in ``conn``.
"""

from __future__ import annotations

import datetime as dt
import weakref
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.kit.db import Database


@dataclass(frozen=True)
class Erasing:
    """A user being erased: who, the name their records keep, and when."""

    user_id: str
    pseudonym: str
    at: dt.datetime


class ErasureListener(Protocol):
    async def erasing(self, conn: AsyncConnection, erasing: Erasing) -> None:
        """Forget or stop what the package keeps of the user, in the erasure's
        transaction (not committed yet)."""
        ...


_listeners: weakref.WeakKeyDictionary[Database, list[ErasureListener]] = weakref.WeakKeyDictionary()


def listen(db: Database, listener: ErasureListener) -> None:
    """Have ``listener`` hear of every user erased through ``db``, after those before."""
    _listeners.setdefault(db, []).append(listener)


async def tell(db: Database, conn: AsyncConnection, erasing: Erasing) -> None:
    for listener in _listeners.get(db, ()):
        await listener.erasing(conn, erasing)
