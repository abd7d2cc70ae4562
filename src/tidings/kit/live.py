"""Live push: fan messages out to every open connection of a user.

``LocalHub`` serves the embedded default, where API and workers share one process.
``NatsHub`` (NATS core subjects) and ``RedisHub`` (Redis pub/sub) carry messages between
processes: a worker writes an inbox item, and whichever API process holds the user's
connections pushes it. Each process listens to a user's subject only while that user
has a connection open there, so the broker sends an update only to the processes that
hold its user; what arrives is handed to a ``LocalHub`` inside, which keeps its bounded
queues and ``resync``.

A user holds at most ``max_per_user`` connections in one process: a new one closes the
user's oldest, which is told why (``CLOSED``), so a forgotten tab or a client that leaks
connections cannot pile them up.

Live push is best-effort: the stored row is the truth, and a connection that misses a
message catches up from it (from the id of the last event its client got, or with
``resync``). A broker that is down costs live updates (logged), never the caller's work.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Protocol

import nats.errors
import orjson
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)

_QUEUE_LIMIT = 1000
_CONFIRM_SECONDS = 2.0
"""How long a new connection waits for the broker to confirm its user's subscription."""
_RETRY_SECONDS = 1.0
_COMPLAIN_EVERY = 30.0
"""Seconds between two warnings about the same broker trouble."""


CLOSED = "closed"
"""The last message of a connection that a newer one of the same user pushed out; its
data says why (``TOO_MANY_STREAMS``)."""
TOO_MANY_STREAMS = "too_many_streams"

RESYNC = "resync"
"""What a connection whose bounded queue overflowed gets instead of the messages it
lost: the stream catches up from the database (or tells its client to reload)."""

INTERNAL = "\x00"
"""The first character of a channel this process listens to for itself (a user id never
holds it): its subscriptions are not streams, and no stream cap counts them."""

RECOUNT = "recount"
"""The event that asks the process holding a user's connections to send their fresh
counts: only that process knows whether anyone listens, so only it pays for the count."""


class LiveHub(Protocol):
    """Publishes to a user's open connections; subscribes a connection."""

    async def start(self) -> None:
        """Connect to the broker, if any. One out of reach is logged and tried again in
        the background, not raised: the process serves without live updates meanwhile."""
        ...

    async def close(self) -> None: ...

    async def publish(self, user_id: str, message: dict[str, Any]) -> None: ...

    def subscribe(self, user_id: str) -> Any: ...

    def listening(self, user_ids: Iterable[str]) -> list[str]:
        """Those of ``user_ids`` who may have an open connection (a hub spanning several
        processes cannot know, and returns them all)."""
        ...

    @property
    def streams(self) -> int:
        """Connections open in this process, of all users together."""
        ...

    @property
    def spans_processes(self) -> bool:
        """Whether connections may be held by other processes than this one: then
        ``listening`` cannot tell who listens, and a user's counts are worked out where
        the connection is (``RECOUNT``), not by the process that changed them."""
        ...


class LocalHub:
    """In-process hub. A slow connection's queue is bounded: when it overflows, the
    connection gets a ``resync`` message instead of an unbounded backlog. A user's
    connections beyond ``max_per_user`` close, oldest first, with ``CLOSED``."""

    def __init__(self, *, max_per_user: int | None = None) -> None:
        # Per user, the connections' queues in the order they opened (a dict keeps it).
        self._subscribers: dict[str, dict[asyncio.Queue[dict[str, Any]], None]] = defaultdict(dict)
        self._max_per_user = max_per_user
        self._streams = 0

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def publish(self, user_id: str, message: dict[str, Any]) -> None:
        for queue in tuple(self._subscribers.get(user_id, ())):
            try:
                queue.put_nowait(message)
            except asyncio.QueueFull:
                _drain(queue)
                queue.put_nowait({"event": RESYNC, "data": {}})

    @asynccontextmanager
    async def subscribe(self, user_id: str) -> AsyncIterator[asyncio.Queue[dict[str, Any]]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(_QUEUE_LIMIT)
        subscribers = self._subscribers[user_id]
        subscribers[queue] = None
        if not user_id.startswith(INTERNAL):
            self._streams += 1
        if self._max_per_user is not None and len(subscribers) > self._max_per_user:
            oldest = next(iter(subscribers))
            self._unsubscribe(user_id, oldest)
            # Off the list first, so no later message can push this last one out.
            _drain(oldest)
            oldest.put_nowait({"event": CLOSED, "data": {"reason": TOO_MANY_STREAMS}})
        try:
            yield queue
        finally:
            self._unsubscribe(user_id, queue)

    def _unsubscribe(self, user_id: str, queue: asyncio.Queue[dict[str, Any]]) -> None:
        subscribers = self._subscribers.get(user_id)
        if subscribers is None or queue not in subscribers:
            return  # already pushed out by a newer connection
        del subscribers[queue]
        if not user_id.startswith(INTERNAL):
            self._streams -= 1
        if not subscribers:
            del self._subscribers[user_id]

    def connections(self, user_id: str) -> int:
        return len(self._subscribers.get(user_id, ()))

    @property
    def streams(self) -> int:
        return self._streams

    def listening(self, user_ids: Iterable[str]) -> list[str]:
        return [user_id for user_id in user_ids if user_id in self._subscribers]

    @property
    def spans_processes(self) -> bool:
        return False


def user_token(user_id: str) -> str:
    """A user's part of a subject or channel name: any id becomes one plain token (the
    id itself travels in the payload, so two ids sharing a token never mix)."""
    digest = hashlib.blake2b(user_id.encode("utf-8", "surrogatepass"), digest_size=16)
    return digest.hexdigest()


class _BrokerHub:
    """What both broker hubs share: local delivery, and listening to a user's subject
    while, and only while, the user has a connection in this process."""

    broker = "broker"

    def __init__(self, *, max_per_user: int | None = None) -> None:
        self._local = LocalHub(max_per_user=max_per_user)
        self._interest: dict[str, int] = {}
        """user id → open connections in this process."""
        self._lock = asyncio.Lock()
        """Serialises subscribing and unsubscribing, so a user's state cannot interleave."""
        self._complained: dict[str, float] = {}
        self._count = 0

    async def publish(self, user_id: str, message: dict[str, Any]) -> None:
        """Send to the user's connections in every process; dropped (and logged) when
        the broker cannot be reached.

        Raises:
            orjson.JSONEncodeError: the message is not JSON (a bug of the caller's).
        """
        payload = orjson.dumps({"user": user_id, "message": message})
        await self._send(user_token(user_id), payload)

    @asynccontextmanager
    async def subscribe(self, user_id: str) -> AsyncIterator[asyncio.Queue[dict[str, Any]]]:
        """A bounded queue of the user's messages; the broker subscription is in place
        (confirmed, when the broker can be reached) once this is entered."""
        async with self._local.subscribe(user_id) as queue:
            self._interest[user_id] = self._interest.get(user_id, 0) + 1
            try:
                await self._reconciled(user_id)
                await self._confirm(user_id)
                yield queue
            finally:
                left = self._interest[user_id] - 1
                if left:
                    self._interest[user_id] = left
                else:
                    del self._interest[user_id]
                    # Shielded: a connection ends by being cancelled, and a cancelled
                    # unsubscribe would leave the broker sending this user's messages.
                    await asyncio.shield(self._reconciled(user_id))

    async def _reconciled(self, user_id: str) -> None:
        async with self._lock:
            await self._reconcile(user_id)

    @property
    def received(self) -> int:
        """Messages the broker has sent this process: only those of its users."""
        return self._count

    def connections(self, user_id: str) -> int:
        """Open connections of the user in this process."""
        return self._local.connections(user_id)

    @property
    def streams(self) -> int:
        return self._local.streams

    def listening(self, user_ids: Iterable[str]) -> list[str]:
        return list(user_ids)

    @property
    def spans_processes(self) -> bool:
        return True

    async def _received(self, payload: bytes) -> None:
        self._count += 1
        try:
            decoded = orjson.loads(payload)
            user_id, message = decoded["user"], decoded["message"]
            if not isinstance(user_id, str):
                raise TypeError(user_id)
        except (orjson.JSONDecodeError, KeyError, TypeError):
            self._complain("payload", "live push: dropped a malformed message from %s", self.broker)
            return
        await self._local.publish(user_id, message)

    def _complain(self, trouble: str, text: str, *args: object) -> None:
        """Warn about broker trouble, at most once per ``_COMPLAIN_EVERY`` per trouble."""
        now = time.monotonic()
        if now - self._complained.get(trouble, -_COMPLAIN_EVERY) >= _COMPLAIN_EVERY:
            self._complained[trouble] = now
            log.warning(text, *args)

    async def _send(self, token: str, payload: bytes) -> None:
        raise NotImplementedError

    async def _reconcile(self, user_id: str) -> None:
        """Subscribe to or unsubscribe from the user's subject, whichever ``_interest``
        says is due; called with ``_lock`` held."""
        raise NotImplementedError

    async def _confirm(self, user_id: str) -> None:
        """Wait until the broker has the user's subscription (bounded; best-effort)."""
        raise NotImplementedError


class NatsHub(_BrokerHub):
    """Live push over NATS core subjects ``{prefix}.live.<user token>``.

    ``start()`` connects, waiting up to ``connect_wait`` seconds; a NATS that is not
    there yet is retried in the background, and until it answers messages are dropped
    and connections hear nothing. Reconnecting replays the subscriptions
    (nats-py does), and what is published meanwhile is buffered by the client.
    """

    broker = "NATS"

    def __init__(
        self,
        servers: Sequence[str],
        prefix: str,
        *,
        name: str = "tidings-live",
        connect_wait: float = 5.0,
        max_per_user: int | None = None,
    ) -> None:
        super().__init__(max_per_user=max_per_user)
        self._servers = list(servers)
        self._prefix = prefix
        self._name = name
        self._connect_wait = connect_wait
        self._client: NatsClient | None = None
        self._nc: NatsClient | None = None
        """The client, once it has connected."""
        self._connecting: asyncio.Task[None] | None = None
        self._subscriptions: dict[str, Subscription] = {}

    @property
    def received(self) -> int:
        # Counted as they come off the wire, even one for a subscription just dropped.
        return 0 if self._client is None else int(self._client.stats["in_msgs"])

    @property
    def connected(self) -> bool:
        """Whether the hub is connected to NATS right now."""
        return self._nc is not None and self._nc.is_connected

    def subject(self, user_id: str) -> str:
        """The subject a user's messages travel on."""
        return f"{self._prefix}.live.{user_token(user_id)}"

    async def start(self) -> None:
        if self._connecting is not None:
            return
        self._connecting = asyncio.create_task(self._connect(), name="live-nats-connect")
        self._connecting.add_done_callback(_report_failure)
        done, _pending = await asyncio.wait({self._connecting}, timeout=self._connect_wait)
        if done:
            self._connecting.result()
        else:
            log.warning(
                "live push: NATS at %s not reachable yet; trying on in the background, "
                "live updates are dropped until it answers",
                ", ".join(self._servers),
            )

    async def close(self) -> None:
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connecting
        client, self._client, self._nc = self._client, None, None
        self._subscriptions.clear()
        if client is not None and not client.is_closed:
            await client.close()

    async def _connect(self) -> None:
        client = NatsClient()
        self._client = client
        # max_reconnect_attempts=-1 also retries the first connection, for as long as
        # it takes, every reconnect_time_wait.
        await client.connect(
            servers=self._servers,
            name=self._name,
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=1,
            connect_timeout=2,
            error_cb=self._on_error,
            disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_reconnected,
        )
        async with self._lock:
            self._nc = client
            for user_id in list(self._interest):
                await self._reconcile(user_id)
        log.info("live push: connected to NATS at %s", client.connected_url)

    async def _send(self, token: str, payload: bytes) -> None:
        nc = self._nc
        if nc is None or nc.is_closed:
            self._complain("send", "live push: no NATS connection; messages are dropped")
            return
        try:
            await nc.publish(f"{self._prefix}.live.{token}", payload)
        except nats.errors.Error as exc:
            self._complain("send", "live push: a message to NATS was dropped: %r", exc)

    async def _reconcile(self, user_id: str) -> None:
        nc = self._nc
        subscription = self._subscriptions.get(user_id)
        if user_id in self._interest and subscription is None and nc is not None:
            with contextlib.suppress(nats.errors.ConnectionClosedError):
                self._subscriptions[user_id] = await nc.subscribe(
                    self.subject(user_id), cb=self._on_message
                )
        elif user_id not in self._interest and subscription is not None:
            del self._subscriptions[user_id]
            with contextlib.suppress(nats.errors.Error):
                await subscription.unsubscribe()

    async def _confirm(self, user_id: str) -> None:
        nc = self._nc
        # While reconnecting, the SUB waits in the client's buffer and goes out first
        # thing on the new connection: nothing to wait for here.
        if nc is None or not nc.is_connected:
            return
        try:
            # The server handles a connection's commands in order: the PONG comes after
            # the SUB is in place.
            await nc.flush(timeout=int(_CONFIRM_SECONDS))
        except (nats.errors.Error, TimeoutError) as exc:
            self._complain("confirm", "live push: NATS did not confirm a subscription: %r", exc)

    async def _on_message(self, msg: Msg) -> None:
        await self._received(msg.data)

    async def _on_error(self, exc: Exception) -> None:
        self._complain(f"error:{type(exc).__name__}", "live push: NATS: %r", exc)

    async def _on_disconnected(self) -> None:
        if self._nc is not None:
            log.warning("live push: disconnected from NATS; reconnecting")

    async def _on_reconnected(self) -> None:
        client = self._client
        log.info("live push: reconnected to NATS at %s", client and client.connected_url)


class RedisHub(_BrokerHub):
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
            self._quiet_until = time.monotonic() + _RETRY_SECONDS
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
            await asyncio.wait_for(asyncio.shield(future), _CONFIRM_SECONDS)
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
                await asyncio.sleep(_RETRY_SECONDS)

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


def _report_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("live push: cannot connect: %r", exc)


def _drain(queue: asyncio.Queue[dict[str, Any]]) -> None:
    while not queue.empty():
        queue.get_nowait()
