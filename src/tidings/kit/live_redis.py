"""Live push between processes over Redis pub/sub."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError

from tidings.kit.live import CONFIRM_SECONDS, RETRY_SECONDS, user_token
from tidings.kit.live_broker import BrokerHub

log = logging.getLogger("tidings.kit.live")


class RedisHub(BrokerHub):
    """Live push over Redis pub/sub channels ``{prefix}:live:<user token>``.

    One pub/sub connection per process; a reader task hands messages on. A connection
    lost is re-made by the reader, which then subscribes again to every user with a
    connection here.
    """

    broker = "Redis"

    def __init__(self, redis_url: str, prefix: str, *, max_per_user: int | None = None) -> None:
        super().__init__(max_per_user=max_per_user)
        self._redis: Redis = Redis.from_url(
            redis_url,
            socket_connect_timeout=2.0,
            socket_timeout=5.0,
            socket_keepalive=True,
            health_check_interval=30,
            # One quick retry: a publisher must not wait long on a Redis that is gone,
            # and the reader retries on its own.
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 1),
        )
        self._prefix = prefix
        self._pubsub: PubSub = self._redis.pubsub()
        self._reader: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._broken = False
        """A subscription may be missing: the reader puts them right."""
        self._confirmed: dict[bytes, asyncio.Future[None]] = {}
        self._quiet_until = 0.0

    def channel(self, user_id: str) -> bytes:
        """The channel a user's messages travel on."""
        return self._channel(user_token(user_id))

    def _channel(self, token: str) -> bytes:
        return f"{self._prefix}:live:{token}".encode()

    async def start(self) -> None:
        if self._reader is not None:
            return
        self._reader = asyncio.create_task(self._read(), name="live-redis-reader")
        try:
            await self._redis.ping()
        except (RedisError, OSError) as exc:
            log.warning("live push: Redis not reachable yet (%r); live updates are dropped", exc)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
        for channel in list(self._confirmed):
            self._stop_waiting(channel)
        await self._pubsub.aclose()  # type: ignore[no-untyped-call]
        await self._redis.aclose()

    async def _send(self, token: str, payload: bytes) -> None:
        if time.monotonic() < self._quiet_until:
            # Redis failed a moment ago: drop at once rather than make every publisher
            # wait out a connect timeout.
            self._complain("send", "live push: Redis unreachable; messages are dropped")
            return
        try:
            await self._redis.publish(self._channel(token), payload)
        except (RedisError, OSError) as exc:
            self._quiet_until = time.monotonic() + RETRY_SECONDS
            self._complain("send", "live push: a message to Redis was dropped: %r", exc)

    async def _reconcile(self, user_id: str) -> None:
        channel = self.channel(user_id)
        # An UNSUBSCRIBE not yet answered still lists the channel: subscribing again
        # takes it off redis-py's pending list, so the late answer does not drop it.
        subscribed = (
            channel in self._pubsub.channels
            and channel not in self._pubsub.pending_unsubscribe_channels
        )
        wanted = user_id in self._interest
        if wanted == subscribed:
            return
        if self._broken:
            # The reader is re-making the connection and subscribes everyone after.
            self._stop_waiting(channel)
            return
        try:
            if wanted:
                self._confirmed[channel] = asyncio.get_running_loop().create_future()
                await self._pubsub.subscribe(channel)
                self._wake.set()
            else:
                self._stop_waiting(channel)
                await self._pubsub.unsubscribe(channel)
        except (RedisError, OSError) as exc:
            self._stop_waiting(channel)
            self._broken = True
            self._wake.set()
            self._complain("subscribe", "live push: Redis subscription deferred: %r", exc)

    async def _confirm(self, user_id: str) -> None:
        future = self._confirmed.get(self.channel(user_id))
        if future is None or future.done():
            return
        try:
            await asyncio.wait_for(asyncio.shield(future), CONFIRM_SECONDS)
        except TimeoutError:
            self._complain("confirm", "live push: Redis did not confirm a subscription")

    def _stop_waiting(self, channel: bytes) -> None:
        future = self._confirmed.pop(channel, None)
        if future is not None and not future.done():
            future.set_result(None)

    async def _read(self) -> None:
        """Hand on what arrives; after a failure, wait, reconnect and subscribe again."""
        while True:
            try:
                if self._broken:
                    await self._restore()
                if self._pubsub.connection is None:
                    # Nothing subscribed yet: no connection to read from.
                    await self._wake.wait()
                    self._wake.clear()
                    continue
                message = await self._pubsub.get_message(timeout=1.0)
                if message is not None:
                    await self._on_message(message)
            except (RedisError, OSError) as exc:
                self._broken = True
                self._complain("read", "live push: Redis pub/sub: %r; retrying", exc)
                await asyncio.sleep(RETRY_SECONDS)

    async def _restore(self) -> None:
        """Bring the subscriptions in line with the connections here, after a failure
        (the channels redis-py knows it re-subscribes itself on reconnecting)."""
        async with self._lock:
            self._broken = False
            wanted = {self.channel(user_id): user_id for user_id in self._interest}
            pending = self._pubsub.pending_unsubscribe_channels
            extra = [c for c in self._pubsub.channels if c not in wanted and c not in pending]
            if extra:
                await self._pubsub.unsubscribe(*extra)
            for user_id in wanted.values():
                await self._reconcile(user_id)
            if self._broken:
                raise ConnectionError("Redis is still out of reach")

    async def _on_message(self, message: dict[str, Any]) -> None:
        kind, channel = message["type"], message["channel"]
        if kind == "message":
            await self._received(message["data"])
        elif kind == "subscribe":
            future = self._confirmed.get(channel)
            if future is not None and not future.done():
                future.set_result(None)
