"""The built-in mail catcher: messages kept in the database, for the embedded default."""

from __future__ import annotations

import builtins
import datetime as dt
from typing import Any, TypedDict

from tidings.email import repository
from tidings.email.message import OutgoingEmail
from tidings.email.providers.base import Accepted, Capabilities
from tidings.kit import ids
from tidings.kit.clock import Clock
from tidings.kit.db import Database

NAME = "catcher"

CaughtMessage = TypedDict(
    "CaughtMessage",
    {
        "id": str,
        "delivery_id": str | None,
        "message_id": str,
        "to": str,
        "from": str,
        "subject": str,
        "raw": str,
        "created_at": dt.datetime,
    },
)
"""One caught message; ``raw`` is its whole RFC 5322 source."""

_CAPABILITIES = Capabilities(name=NAME, max_message_bytes=10 * 1024 * 1024)


class MailCatcher:
    """Keeps every message in the ``mailbox`` table instead of sending it anywhere.

    A message's row id is its delivery id, so handing the same delivery over twice
    (a redelivered job) stores it once.
    """

    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    @property
    def capabilities(self) -> Capabilities:
        return _CAPABILITIES

    async def send(self, email: OutgoingEmail) -> Accepted:
        """Store the message; storing it again changes nothing."""
        row_id = email.delivery_id or ids.derived_id(NAME, email.message_id)
        row = {
            "id": row_id,
            "message_id": email.message_id,
            "delivery_id": email.delivery_id or None,
            "sender": email.sender,
            "recipient": email.recipient,
            "subject": email.subject,
            # Signed messages are 7-bit in practice; anything else is shown, not sent.
            "raw": email.raw.decode("utf-8", errors="replace"),
            "created_at": self._clock.now(),
        }
        async with self._db.transaction() as conn:
            await repository.catch(self._db, conn, row)
        return Accepted(provider=NAME, provider_id=row_id, reply="250 stored in the mailbox")

    async def list(
        self, limit: int = 50, recipient: str | None = None
    ) -> builtins.list[CaughtMessage]:
        """The newest ``limit`` messages, optionally only those to ``recipient``."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        async with self._db.reader() as conn:
            rows = await repository.caught(conn, limit, recipient)
        return [_caught(row) for row in rows]

    async def clear(self) -> int:
        """Empty the mailbox; returns how many messages were removed."""
        async with self._db.transaction() as conn:
            return await repository.clear_mailbox(conn)

    async def close(self) -> None:
        """Nothing to release: the database belongs to the caller."""


def _caught(row: Any) -> CaughtMessage:
    return {
        "id": row["id"],
        "delivery_id": row["delivery_id"],
        "message_id": row["message_id"],
        "to": row["recipient"],
        "from": row["sender"],
        "subject": row["subject"],
        "raw": row["raw"],
        "created_at": row["created_at"],
    }
