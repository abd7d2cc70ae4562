"""Live push between processes over NATS core subjects."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from tidings.kit.live import CONFIRM_SECONDS, report_failure, user_token
from tidings.kit.live_broker import BrokerHub

log = logging.getLogger("tidings.kit.live")


class NatsHub(BrokerHub):
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
        self._connecting.add_done_callback(report_failure)
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
            await nc.flush(timeout=int(CONFIRM_SECONDS))
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
