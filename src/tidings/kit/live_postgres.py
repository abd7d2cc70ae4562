"""Live push between processes over PostgreSQL ``LISTEN``/``NOTIFY``: the database a
deployment already has carries the inbox's live messages, so several processes on
PostgreSQL need no broker.

Every process listens on one channel and keeps the messages of the users it holds
connections for. A message is published once it is committed (the hub is told after the
commit), by ``pg_notify`` on a connection of its own; messages waiting to go are sent
together, one statement for many. PostgreSQL caps a notification at 8,000 bytes: a
message too large for it goes as ``resync``, and the stream catches up from the
database. A listener that lost its connection connects again and tells every connection
it holds to ``resync``: what was sent meanwhile is in the database, not lost.

Meant for a few processes on one database (``serve --workers``); past that, NATS or
Redis spread the load (``TIDINGS_LIVE_BACKEND``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import asyncpg
import orjson
import sqlalchemy as sa

from tidings.kit.live import RESYNC
from tidings.kit.live_broker import BrokerHub

log = logging.getLogger(__name__)

CHANNEL = "tidings_live"
LISTENER = "tidings-live-listener"
SENDER = "tidings-live-sender"
"""The connections' ``application_name``, as ``pg_stat_activity`` shows them."""
MAX_PAYLOAD = 7_900
"""Bytes of a notification's payload at most: PostgreSQL refuses above 8,000."""
_BATCH = 500
"""Messages sent in one statement at most."""
_RETRY_SECONDS = 1.0
_CONFIRM_SECONDS = 2.0
_PENDING_LIMIT = 10_000
"""Messages waiting to be sent at most: beyond, new ones are dropped and logged (their
streams catch up from the database on their next reconnect)."""


def asyncpg_dsn(database_url: str) -> str:
    """The plain ``postgresql://`` form of a SQLAlchemy URL, as asyncpg takes it."""
    url = sa.engine.make_url(database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


class PostgresHub(BrokerHub):
    """Live push over PostgreSQL notifications on the channel ``tidings_live``."""

    broker = "PostgreSQL"

    def __init__(self, database_url: str, *, max_per_user: int | None = None) -> None:
        super().__init__(max_per_user=max_per_user)
        self._dsn = asyncpg_dsn(database_url)
        self._pending: asyncio.Queue[str] = asyncio.Queue(_PENDING_LIMIT)
        self._incoming: asyncio.Queue[str] = asyncio.Queue(_PENDING_LIMIT)
        self._listening = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        if self._tasks:
            return
        self._tasks = [
            asyncio.create_task(self._listen(), name="live-postgres-listener"),
            asyncio.create_task(self._send_pending(), name="live-postgres-sender"),
            asyncio.create_task(self._hand_on(), name="live-postgres-reader"),
        ]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._listening.wait(), _CONFIRM_SECONDS)
        if not self._listening.is_set():
            log.warning("live push: PostgreSQL not listening yet; live updates are dropped")

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def _send(self, token: str, payload: bytes) -> None:
        text = payload.decode()
        if len(payload) > MAX_PAYLOAD:
            # Too large for a notification: the user's streams reload from the database.
            user = orjson.loads(payload)["user"]
            text = orjson.dumps({"user": user, "message": {"event": RESYNC, "data": {}}}).decode()
        try:
            self._pending.put_nowait(text)
        except asyncio.QueueFull:
            self._complain("send", "live push: too many messages waiting for PostgreSQL; dropped")

    async def _reconcile(self, user_id: str) -> None:
        # One channel carries every user: nothing to subscribe to per user.
        return None

    async def _confirm(self, user_id: str) -> None:
        if self._listening.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._listening.wait(), _CONFIRM_SECONDS)

    async def _send_pending(self) -> None:
        """Send what waits, many messages a statement, on a connection of its own."""
        connection: asyncpg.Connection | None = None
        try:
            while True:
                batch = [await self._pending.get()]
                while len(batch) < _BATCH and not self._pending.empty():
                    batch.append(self._pending.get_nowait())
                try:
                    if connection is None or connection.is_closed():
                        connection = await asyncpg.connect(
                            self._dsn, timeout=5, server_settings={"application_name": SENDER}
                        )
                    await connection.execute(
                        "SELECT pg_notify($1, payload) FROM unnest($2::text[]) AS payload",
                        CHANNEL,
                        batch,
                    )
                except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                    self._complain("send", "live push: messages to PostgreSQL dropped: %r", exc)
                    connection = None
                    await asyncio.sleep(_RETRY_SECONDS)
        finally:
            if connection is not None:
                await connection.close(timeout=2)

    async def _listen(self) -> None:
        """Listen; on a lost connection, wait, connect again, and have every stream here
        catch up from the database."""
        reconnecting = False
        while True:
            connection: asyncpg.Connection | None = None
            try:
                connection = await asyncpg.connect(
                    self._dsn, timeout=5, server_settings={"application_name": LISTENER}
                )
                await connection.add_listener(CHANNEL, self._notified)
                self._listening.set()
                if reconnecting:
                    for user_id in list(self._interest):
                        await self._local.publish(user_id, {"event": RESYNC, "data": {}})
                while not connection.is_closed():
                    await asyncio.sleep(_RETRY_SECONDS)
                    # A query finds a connection the server dropped.
                    await connection.execute("SELECT 1")
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                self._complain("listen", "live push: PostgreSQL listener: %r; retrying", exc)
            finally:
                self._listening.clear()
                if connection is not None and not connection.is_closed():
                    with contextlib.suppress(Exception):
                        await connection.close(timeout=2)
            reconnecting = True
            await asyncio.sleep(_RETRY_SECONDS)

    def _notified(self, _connection: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            self._incoming.put_nowait(payload)
        except asyncio.QueueFull:
            self._complain("receive", "live push: too many notifications waiting; dropped")

    async def _hand_on(self) -> None:
        """Give what arrived to this process's connections, in the order it came."""
        while True:
            payload = await self._incoming.get()
            await self._received(payload.encode())
