"""Delivery timelines: one delivery with every transition, and a user's recent ones, as
the key asking may see them."""

from __future__ import annotations

from typing import Any

from tidings.auth.keys import ApiKey
from tidings.delivery.service import DeliveryFilter, DeliveryService
from tidings.kit import errors

__all__ = ["DeliveryFilter", "Timelines"]


class Timelines:
    """Reads deliveries back with their transitions, for producers and operators."""

    def __init__(self, deliveries: DeliveryService) -> None:
        self._deliveries = deliveries

    async def delivery(self, delivery_id: str, key: ApiKey) -> dict[str, Any]:
        """One delivery, its type and every transition.

        Raises:
            errors.NotFound: no such delivery.
            errors.Forbidden: the key covers neither its type nor operators' work.
        """
        found = await self._deliveries.one(delivery_id)
        if found is None:
            raise errors.NotFound(f"No delivery with id {delivery_id!r}.", field="delivery_id")
        if not key.may_read(found["type"]):
            raise errors.Forbidden(
                f"This key may not read deliveries of type {found['type']!r}.",
                field="authorization",
            )
        return found

    async def for_user(
        self, user_id: str, where: DeliveryFilter, cursor: str | None, limit: int
    ) -> tuple[list[dict[str, Any]], str | None]:
        """A page of the user's deliveries, newest first, each with its transitions; and
        the cursor of the next page."""
        return await self._deliveries.of_user(user_id, where, cursor, limit)
