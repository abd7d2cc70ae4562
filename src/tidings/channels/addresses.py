"""Address books: the database's (table ``channel_addresses``), and an in-memory twin
for a plugin's own tests."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from tidings.channels.interface import Address, AddressBook
from tidings.kit import ids
from tidings.kit.clock import Clock
from tidings.kit.db import Database
from tidings.kit.tables import channel_addresses

_C = channel_addresses.c


class SqlAddressBook(AddressBook):
    """One channel's addresses in the database."""

    def __init__(self, db: Database, clock: Clock, channel: str) -> None:
        self._db = db
        self._clock = clock
        self._channel = channel

    async def add(self, user_id: str, address: str, secrets: Mapping[str, Any]) -> Address:
        now = self._clock.now()
        row = {
            "id": ids.derived_id("channel-address", self._channel, user_id, address),
            "channel": self._channel,
            "user_id": user_id,
            "address": address,
            "secrets": dict(secrets),
            "created_at": now,
            "updated_at": now,
        }
        stmt = self._db.upsert(channel_addresses).values(row)
        stmt = stmt.on_conflict_do_update(
            index_elements=[_C.id], set_={"secrets": stmt.excluded.secrets, "updated_at": now}
        )
        async with self._db.transaction() as conn:
            await conn.execute(stmt)
            found = (
                await conn.execute(sa.select(channel_addresses).where(_C.id == row["id"]))
            ).one()
        return _address(dict(found._mapping))

    async def of_user(self, user_id: str) -> list[Address]:
        query = (
            sa.select(channel_addresses)
            .where(_C.channel == self._channel, _C.user_id == user_id)
            .order_by(_C.created_at, _C.id)
        )
        async with self._db.reader() as conn:
            return [_address(dict(row._mapping)) for row in await conn.execute(query)]

    async def remove(self, user_id: str, address_id: str) -> bool:
        query = sa.delete(channel_addresses).where(
            _C.id == address_id, _C.channel == self._channel, _C.user_id == user_id
        )
        async with self._db.transaction() as conn:
            return bool((await conn.execute(query)).rowcount)

    async def forget(self, address_id: str) -> None:
        query = sa.delete(channel_addresses).where(_C.id == address_id, _C.channel == self._channel)
        async with self._db.transaction() as conn:
            await conn.execute(query)


def _address(row: Mapping[str, Any]) -> Address:
    return Address(
        id=row["id"],
        user_id=row["user_id"],
        address=row["address"],
        secrets=row["secrets"] or {},
        created_at=row["created_at"],
    )


class MemoryAddressBook(AddressBook):
    """Addresses in a dict: for a plugin's unit tests, with nothing to set up."""

    def __init__(self) -> None:
        self.addresses: dict[str, Address] = {}

    async def add(self, user_id: str, address: str, secrets: Mapping[str, Any]) -> Address:
        address_id = ids.derived_id("channel-address", "memory", user_id, address)
        existing = self.addresses.get(address_id)
        created = existing.created_at if existing else dt.datetime.now(dt.UTC)
        found = Address(address_id, user_id, address, dict(secrets), created)
        self.addresses[address_id] = found
        return found

    async def of_user(self, user_id: str) -> list[Address]:
        return [a for a in self.addresses.values() if a.user_id == user_id]

    async def remove(self, user_id: str, address_id: str) -> bool:
        found = self.addresses.get(address_id)
        if found is None or found.user_id != user_id:
            return False
        del self.addresses[address_id]
        return True

    async def forget(self, address_id: str) -> None:
        self.addresses.pop(address_id, None)
