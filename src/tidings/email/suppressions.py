"""The suppression list: addresses that bounced hard or complained are never mailed again."""

from __future__ import annotations

import enum
from collections.abc import Iterable

from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.email import repository
from tidings.kit.clock import Clock
from tidings.kit.db import Database

normalise_address = repository.normalise


class SuppressionCause(enum.StrEnum):
    HARD_BOUNCE = "hard_bounce"
    COMPLAINT = "complaint"
    MANUAL = "manual"
    UNSUBSCRIBED = "unsubscribed"
    """One-click unsubscribe from an address the user's stored profile does not hold."""


class Suppressions:
    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    async def add(
        self,
        conn: AsyncConnection,
        address: str,
        cause: SuppressionCause,
        *,
        detail: str | None = None,
        provider: str | None = None,
    ) -> None:
        """Put an address on the list, in the caller's transaction (first cause wins)."""
        await repository.suppress(
            self._db,
            conn,
            address,
            reason=cause.value,
            detail=detail,
            provider=provider,
            now=self._clock.now(),
        )

    async def among(self, conn: AsyncConnection, addresses: Iterable[str]) -> dict[str, str]:
        """Normalised address → cause, for those of ``addresses`` on the list."""
        return await repository.suppressed(conn, addresses)

    async def remove(self, address: str) -> bool:
        async with self._db.transaction() as conn:
            return await repository.unsuppress(conn, address)
