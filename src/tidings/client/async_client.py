"""The asynchronous client."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

import httpx

from tidings.client import _core, errors
from tidings.client._core import Call, segment
from tidings.client.models import (
    Accepted,
    BroadcastReach,
    CancelledEvent,
    Delivery,
    DryRun,
    Event,
    EventView,
    Profile,
    Retry,
    SubscribersChanged,
)


class AsyncTidings:
    """A producer's connection to Tidings (``async with AsyncTidings(url, key) as t``).

    ``transport`` and the other httpx options pass through, for proxies and tests.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 10.0,
        retry: Retry | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.retry = retry or Retry()
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers=_core.headers(api_key),
            timeout=timeout,
            transport=transport,
        )

    async def __aenter__(self) -> AsyncTidings:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    # -- events ------------------------------------------------------------------------

    async def publish(
        self,
        type: str,
        *,
        data: Mapping[str, Any] | None = None,
        recipients: Sequence[str | Mapping[str, Any]] | None = None,
        topic: str | None = None,
        actor: Mapping[str, Any] | None = None,
        tenant: str | None = None,
        idempotency_key: str | None = None,
        send_at: dt.datetime | None = None,
        cancellation_key: str | None = None,
    ) -> Accepted:
        """Publish one event to ``recipients`` (ids or profiles) or a ``topic``; with
        ``send_at`` (a time with its zone), planned for no one before then."""
        event = _core.event_body(
            type,
            data=data,
            recipients=recipients,
            topic=topic,
            actor=actor,
            tenant=tenant,
            idempotency_key=idempotency_key,
            send_at=send_at,
            cancellation_key=cancellation_key,
        )
        return await self.publish_event(event)

    async def publish_event(self, event: Event) -> Accepted:
        found = await self._call(Call("POST", "/v1/events", json=event.body()))
        return Accepted.model_validate(found)

    async def publish_many(self, events: Sequence[Event]) -> list[Accepted]:
        """Publish events in batches of up to 1,000; each batch is stored whole or not at
        all, and a failed batch raises before the next is sent."""
        accepted: list[Accepted] = []
        for chunk in _core.chunks(events):
            body = {"events": [event.body() for event in chunk]}
            found = await self._call(Call("POST", "/v1/events/batch", json=body))
            accepted.extend(Accepted.model_validate(a) for a in found["events"])
        return accepted

    def batcher(self, size: int = 100) -> AsyncBatcher:
        """Collect events and publish them ``size`` at a time (and the rest on exit)."""
        return AsyncBatcher(self, size)

    async def event(
        self, event_id: str, *, cursor: str | None = None, limit: int | None = None
    ) -> EventView:
        """The event and each recipient's delivery, with every transition."""
        params = {k: v for k, v in (("cursor", cursor), ("limit", limit)) if v is not None}
        path = f"/v1/events/{segment(event_id)}"
        return EventView.model_validate(await self._call(Call("GET", path, params=params)))

    async def dry_run(
        self,
        type: str,
        *,
        data: Mapping[str, Any] | None = None,
        recipients: Sequence[str | Mapping[str, Any]] | None = None,
        topic: str | None = None,
        actor: Mapping[str, Any] | None = None,
        tenant: str | None = None,
        send_at: dt.datetime | None = None,
    ) -> DryRun:
        """What ``publish`` with these arguments would do now, per recipient and
        channel; nothing is written."""
        event = _core.event_body(
            type,
            data=data,
            recipients=recipients,
            topic=topic,
            actor=actor,
            tenant=tenant,
            idempotency_key=None,
            send_at=send_at,
        )
        return await self.dry_run_event(event)

    async def dry_run_event(self, event: Event) -> DryRun:
        found = await self._call(Call("POST", "/v1/events/dry-run", json=event.body()))
        return DryRun.model_validate(found)

    async def cancel(self, event_id: str) -> CancelledEvent:
        """Cancel one event: its deliveries not sent yet are suppressed (``cancelled``),
        and it is planned for no one if it was not yet. Idempotent."""
        path = f"/v1/events/{segment(event_id)}/cancel"
        found = await self._call(Call("POST", path))
        return CancelledEvent.model_validate(found["events"][0])

    async def cancel_all(self, cancellation_key: str) -> list[CancelledEvent]:
        """Cancel every event this key published with ``cancellation_key``."""
        body = {"cancellation_key": cancellation_key}
        cancelled: list[CancelledEvent] = []
        while True:  # 1,000 events a call; those cancelled already come last
            found = await self._call(Call("POST", "/v1/events/cancel", json=body))
            cancelled.extend(CancelledEvent.model_validate(e) for e in found["events"])
            if not found.get("more"):
                return list({c.event_id: c for c in cancelled}.values())

    async def broadcast_reach(self, event_id: str, user_id: str) -> BroadcastReach:
        """Whether ``user_id`` has the in-app item of a broadcast event (one to a large
        topic, stored once), and why not; ``NotFound`` when the event was not broadcast."""
        path = f"/v1/events/{segment(event_id)}/broadcast/{segment(user_id)}"
        return BroadcastReach.model_validate(await self._call(Call("GET", path)))

    async def delivery(self, delivery_id: str) -> Delivery:
        """One delivery and its timeline."""
        path = f"/v1/deliveries/{segment(delivery_id)}"
        return Delivery.model_validate(await self._call(Call("GET", path)))

    # -- recipients and topics -------------------------------------------------------

    async def put_user(self, user_id: str, **profile: str | None) -> Profile:
        """Create or replace a recipient's profile (email, name, locale, timezone)."""
        path = f"/v1/users/{segment(user_id)}"
        return Profile.model_validate(await self._call(Call("PUT", path, json=profile)))

    async def user(self, user_id: str) -> Profile:
        path = f"/v1/users/{segment(user_id)}"
        return Profile.model_validate(await self._call(Call("GET", path)))

    async def delete_user(self, user_id: str) -> None:
        """Erase a recipient and everything Tidings holds about them."""
        await self._call(Call("DELETE", f"/v1/users/{segment(user_id)}"))

    async def subscribe(self, topic: str, user_ids: Sequence[str]) -> SubscribersChanged:
        path = f"/v1/topics/{segment(topic)}/subscribers"
        found = await self._call(Call("PUT", path, json={"user_ids": list(user_ids)}))
        return SubscribersChanged.model_validate(found)

    async def unsubscribe(self, topic: str, user_ids: Sequence[str]) -> SubscribersChanged:
        path = f"/v1/topics/{segment(topic)}/subscribers"
        found = await self._call(Call("DELETE", path, json={"user_ids": list(user_ids)}))
        return SubscribersChanged.model_validate(found)

    # -- the wire ----------------------------------------------------------------------

    async def _call(self, call: Call) -> Any:
        tries = 0
        while True:
            tries += 1
            try:
                response = await self._http.request(
                    call.method, call.path, json=call.json, params=dict(call.params)
                )
            except httpx.TransportError as exc:
                if tries >= self.retry.attempts:
                    raise errors.unreachable(exc) from exc
                await asyncio.sleep(_core.backoff(self.retry, tries))
                continue
            if _core.retryable(response) and tries < self.retry.attempts:
                wait = _core.delay(self.retry, tries, response)
                if wait is not None:
                    await asyncio.sleep(wait)
                    continue
            return _core.answer(response)


class AsyncBatcher:
    """``async with client.batcher(100) as batch: await batch.add(...)``; what it
    accepted is in ``accepted``, in the order added."""

    def __init__(self, client: AsyncTidings, size: int) -> None:
        if not 1 <= size <= _core.MAX_BATCH:
            raise ValueError(f"a batch holds 1 to {_core.MAX_BATCH} events, not {size}")
        self._client = client
        self._size = size
        self._pending: list[Event] = []
        self.accepted: list[Accepted] = []

    async def __aenter__(self) -> AsyncBatcher:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None:
            await self.flush()

    async def add(self, event: Event) -> None:
        self._pending.append(event)
        if len(self._pending) >= self._size:
            await self.flush()

    async def flush(self) -> None:
        """Publish what is pending. On failure it stays pending (with its idempotency
        keys), so calling ``flush`` again cannot publish anything twice. Events added
        while a flush is on its way are published by it too."""
        while self._pending:
            taken, self._pending = self._pending, []
            try:
                accepted = await self._client.publish_many(taken)
            except BaseException:
                self._pending[:0] = taken
                raise
            self.accepted.extend(accepted)

    @property
    def pending(self) -> list[Event]:
        """What is not published yet: after an exception left the ``with`` block, the
        events it had added and not flushed (the batcher publishes nothing then)."""
        return list(self._pending)
