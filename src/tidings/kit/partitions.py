"""Which worker pulls which partition: leases held as PostgreSQL session locks.

Each worker process keeps one connection open, named after the stages and lanes it
serves, and holds a session-level advisory lock for every (stage, lane, partition) it
owns. Every second it counts the connections serving each (stage, lane) and takes or
gives up partitions until it holds its fair share. A worker that dies — SIGKILL
included — loses its connection, PostgreSQL drops its locks at once, and the survivors
take its partitions on their next round: no heartbeats to tune, no lease to expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import zlib
from collections.abc import Collection

import asyncpg
import sqlalchemy as sa

log = logging.getLogger(__name__)

_LOCK_CLASS = 7413
_TAG = "tidings-worker"
PartitionKey = tuple[str, int, int]
"""(stage, lane, partition)."""


def asyncpg_dsn(database_url: str) -> str:
    """The plain ``postgresql://`` form of a SQLAlchemy URL, for asyncpg itself."""
    url = sa.engine.make_url(database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


def member_tag(stages: Collection[str], lanes: Collection[int], member: str) -> str:
    """The connection name that says what a worker serves, e.g.
    ``tidings-worker deliver:0123 plan:0123 a1b2c3d4`` (at most 63 bytes)."""
    served = " ".join(f"{stage}:{''.join(map(str, sorted(lanes)))}" for stage in sorted(stages))
    return f"{_TAG} {served} {member}"[:63]


def served_by(tag: str) -> set[tuple[str, int]]:
    """The (stage, lane) pairs a connection name says its worker serves."""
    parts = tag.split(" ")
    if not parts or parts[0] != _TAG:
        return set()
    served: set[tuple[str, int]] = set()
    for part in parts[1:-1]:
        stage, _, lanes = part.partition(":")
        served.update((stage, int(lane)) for lane in lanes if lane.isdigit())
    return served


def fair_share(partitions: int, members: int) -> int:
    """How many partitions one of ``members`` workers should own: all of them, spread."""
    return -(-partitions // max(1, members))


def lock_id(key: PartitionKey) -> int:
    stage, lane, partition = key
    return zlib.crc32(f"{stage}:{lane}:{partition}".encode()) & 0x7FFFFFFF


class PartitionLeases:
    """The partitions this worker owns, kept to a fair share by a background loop."""

    def __init__(
        self,
        database_url: str,
        stages: Collection[str],
        lanes: Collection[int],
        partitions: int,
        *,
        member: str,
        interval: float = 1.0,
    ) -> None:
        self._dsn = asyncpg_dsn(database_url)
        self._wanted = {(stage, lane) for stage in stages for lane in lanes}
        self._partitions = partitions
        self._tag = member_tag(stages, lanes, member)
        self._interval = interval
        self._owned: set[PartitionKey] = set()
        self._conn: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self.rounds = 0

    def owned(self) -> frozenset[PartitionKey]:
        return frozenset(self._owned)

    async def start(self) -> None:
        """Take a first share before returning, then keep balancing in the background."""
        with contextlib.suppress(Exception):
            await self.balance()
        self._task = asyncio.create_task(self._run(), name="tidings-partition-leases")

    async def stop(self) -> None:
        """Give every partition up (closing the connection drops its locks)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._owned.clear()
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
            self._conn = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval * random.uniform(0.8, 1.2))
            try:
                await self.balance()
            except Exception as exc:
                # The locks went with the connection, or soon will: stop pulling until a
                # new connection holds them again.
                log.warning("partition leases lost (%s); reconnecting", exc)
                self._owned.clear()
                if self._conn is not None:
                    with contextlib.suppress(Exception):
                        await self._conn.close()
                    self._conn = None

    async def balance(self) -> None:
        """One round: count the workers per (stage, lane), then take or give up partitions."""
        conn = await self._connection()
        tags = await conn.fetch(
            "SELECT application_name FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name LIKE $1",
            _TAG + " %",
        )
        members: dict[tuple[str, int], int] = {}
        for row in tags:
            for served in served_by(row["application_name"]):
                members[served] = members.get(served, 0) + 1
        for stage, lane in sorted(self._wanted):
            share = fair_share(self._partitions, members.get((stage, lane), 1))
            mine = sorted(key for key in self._owned if key[:2] == (stage, lane))
            for key in mine[share:]:
                await conn.fetchval("SELECT pg_advisory_unlock($1, $2)", _LOCK_CLASS, lock_id(key))
                self._owned.discard(key)
            free = [
                (stage, lane, partition)
                for partition in range(self._partitions)
                if (stage, lane, partition) not in self._owned
            ]
            random.shuffle(free)
            for key in free:
                if len([k for k in self._owned if k[:2] == (stage, lane)]) >= share:
                    break
                if await conn.fetchval(
                    "SELECT pg_try_advisory_lock($1, $2)", _LOCK_CLASS, lock_id(key)
                ):
                    self._owned.add(key)
        self.rounds += 1

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            self._owned.clear()
            self._conn = await asyncpg.connect(
                self._dsn, server_settings={"application_name": self._tag}
            )
        return self._conn
