"""What the hubs that carry messages between processes share: local delivery, and
listening to a user's subject while, and only while, the user has a connection here."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

import orjson

from tidings.kit.live import COMPLAIN_EVERY, LocalHub, user_token

log = logging.getLogger("tidings.kit.live")


class BrokerHub:
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
        """Warn about broker trouble, at most once per ``COMPLAIN_EVERY`` per trouble."""
        now = time.monotonic()
        if now - self._complained.get(trouble, -COMPLAIN_EVERY) >= COMPLAIN_EVERY:
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
