"""Webhook endpoints as producers manage them: register, change, rotate, test, read the log.

A key sees and changes only the endpoints it registered; an operator's key sees all.
"""

from __future__ import annotations

import base64
import datetime as dt
import secrets
from collections.abc import Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.auth.keys import ApiKey
from tidings.kit import errors, ids
from tidings.kit.clock import Clock
from tidings.kit.db import Database
from tidings.kit.queue import Queue
from tidings.users.erasure import Erasing
from tidings.webhooks import addresses, outbox, repository

TEST_TYPE = "webhook.test"
UPDATABLE = ("url", "description", "types", "states", "enabled")


def new_secret() -> str:
    """A fresh signing secret in the Standard Webhooks form: ``whsec_`` and base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


class ForgetErased:
    """The erasure listener of webhooks: an erased user is named by their pseudonym in
    the webhook messages about them, those waiting to be sent and those in the log
    alike, in the erasure's transaction: what is sent after the erasure, or read from
    the log, no longer carries their id. It must hear before the deliveries are renamed
    (messages find the user's deliveries by id)."""

    async def erasing(self, conn: AsyncConnection, erasing: Erasing) -> None:
        await repository.rename_user(conn, erasing.user_id, erasing.pseudonym)


class WebhooksService:
    """The use cases behind ``/v1/webhooks``."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        queue: Queue,
        listeners: outbox.Outbox,
        *,
        allow_private: bool,
        max_per_key: int = 50,
    ) -> None:
        self._db = db
        self._clock = clock
        self._queue = queue
        self._outbox = listeners
        self._allow_private = allow_private
        self._max_per_key = max_per_key

    async def _checked_url(self, url: str) -> str:
        problem = addresses.problem_with(url)
        if problem is not None:
            raise errors.Invalid(problem, field="url")
        try:
            await addresses.addresses_of(url, allow_private=self._allow_private)
        except addresses.Refused as exc:
            raise errors.Invalid(
                f"The URL points inside this deployment's network ({exc.address}); an "
                f"operator can allow such endpoints with "
                f"{addresses.ALLOW_PRIVATE_SETTING}=true.",
                field="url",
            ) from None
        except addresses.Unresolved:
            pass  # sending to it fails and is logged like any other failure
        return url

    async def create(
        self,
        key: ApiKey,
        *,
        url: str,
        description: str | None,
        types: list[str] | None,
        states: list[str] | None,
    ) -> dict[str, Any]:
        """Register an endpoint for ``key``; the result carries its secret.

        Raises:
            errors.LimitReached: the key already has ``max_per_key`` endpoints (each
                delivery change becomes one message per matching endpoint, so the bound
                is what keeps one key from multiplying the work of every delivery).
        """
        now = self._clock.now()
        row = {
            "id": ids.new_id(),
            "api_key_id": key.id,
            "url": await self._checked_url(url),
            "description": description,
            "secret": new_secret(),
            "types": types,
            "states": states,
            "enabled": True,
            "disabled_at": None,
            "disabled_reason": None,
            "consecutive_failures": 0,
            "created_at": now,
            "updated_at": now,
        }
        async with self._db.transaction() as conn:
            if await repository.count_endpoints(conn, key.id) >= self._max_per_key:
                raise errors.LimitReached(
                    f"This key already has {self._max_per_key} webhook endpoints, as many as "
                    "TIDINGS_WEBHOOKS_MAX_PER_KEY allows: delete one you no longer use, or "
                    "send several event kinds to one endpoint with its types filter.",
                    field="url",
                )
            await repository.add_endpoint(conn, row)
        self._outbox.invalidate()
        return row

    async def page(
        self, key: ApiKey, cursor: str | None, limit: int
    ) -> tuple[list[dict[str, Any]], str | None]:
        """The endpoints ``key`` may see, oldest first, and the cursor of the next page."""
        async with self._db.reader() as conn:
            rows = await repository.endpoints_page(
                conn, None if key.is_operator else key.id, cursor, limit + 1
            )
        more = len(rows) > limit
        rows = rows[:limit]
        return rows, rows[-1]["id"] if more else None

    async def get(self, key: ApiKey, endpoint_id: str) -> dict[str, Any]:
        """One endpoint ``key`` may see.

        Raises:
            errors.NotFound: there is none by that id, or it is another key's.
        """
        async with self._db.reader() as conn:
            found = await repository.endpoint(conn, endpoint_id)
        if found is None or not (key.is_operator or found["api_key_id"] == key.id):
            raise errors.NotFound(f"No webhook endpoint {endpoint_id!r}.", field="id")
        return found

    async def update(
        self, key: ApiKey, endpoint_id: str, changes: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Change an endpoint. Turning it on again forgets its failures and sends what
        waited while it was off."""
        endpoint = await self.get(key, endpoint_id)
        values = {name: changes[name] for name in UPDATABLE if name in changes}
        if "url" in values:
            if values["url"] is None:
                raise errors.Invalid("An endpoint needs a URL.", field="url")
            await self._checked_url(values["url"])
        if "enabled" in values:
            if values["enabled"] is None:
                raise errors.Invalid("'enabled' is true or false.", field="enabled")
            if values["enabled"]:
                values |= {"consecutive_failures": 0, "disabled_at": None, "disabled_reason": None}
            elif endpoint["enabled"]:
                values |= {"disabled_at": self._clock.now(), "disabled_reason": "turned off"}
        values["updated_at"] = self._clock.now()
        async with self._db.transaction() as conn:
            await repository.update_endpoint(conn, endpoint_id, values)
            if values.get("enabled") and not endpoint["enabled"]:
                first = await repository.first_pending(conn, endpoint_id)
                if first is not None:
                    await self._queue.enqueue(
                        conn, [outbox.message_job(first, f"enabled {values['updated_at']}")]
                    )
            found = await repository.endpoint(conn, endpoint_id)
        self._outbox.invalidate()
        assert found is not None
        return found

    async def delete(self, key: ApiKey, endpoint_id: str) -> None:
        """Remove an endpoint, its messages and their log."""
        await self.get(key, endpoint_id)
        async with self._db.transaction() as conn:
            await repository.delete_endpoint(conn, endpoint_id)
        self._outbox.invalidate()

    async def rotate_secret(
        self, key: ApiKey, endpoint_id: str, *, grace_seconds: int = 86_400
    ) -> dict[str, Any]:
        """Give an endpoint a new secret; messages are signed with it from now on, and
        also with the one it replaces for ``grace_seconds``."""
        current = await self.get(key, endpoint_id)
        now = self._clock.now()
        grace = dt.timedelta(seconds=grace_seconds)
        async with self._db.transaction() as conn:
            await repository.update_endpoint(
                conn,
                endpoint_id,
                {
                    "secret": new_secret(),
                    "previous_secret": current["secret"] if grace else None,
                    "previous_secret_until": now + grace if grace else None,
                    "updated_at": now,
                },
            )
            found = await repository.endpoint(conn, endpoint_id)
        assert found is not None
        return found

    async def messages(
        self, key: ApiKey, endpoint_id: str, cursor: str | None, limit: int
    ) -> tuple[list[dict[str, Any]], str | None]:
        """The endpoint's log: messages newest first, each with its attempts."""
        await self.get(key, endpoint_id)
        async with self._db.reader() as conn:
            rows = await repository.messages_page(conn, endpoint_id, cursor, limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        return rows, rows[-1]["id"] if more else None

    async def send_test(self, key: ApiKey, endpoint_id: str) -> dict[str, Any]:
        """Queue a ``webhook.test`` message to the endpoint.

        Raises:
            errors.Conflict: the endpoint is disabled.
        """
        endpoint = await self.get(key, endpoint_id)
        if not endpoint["enabled"]:
            raise errors.Conflict(
                "The endpoint is disabled; turn it on first (PATCH enabled=true).",
                field="enabled",
            )
        now = self._clock.now()
        message_id = ids.new_id()
        row = {
            "id": message_id,
            "endpoint_id": endpoint_id,
            "msg_id": f"msg_{message_id}",
            "delivery_id": None,
            "event_id": None,
            "type": TEST_TYPE,
            "payload": {
                "type": TEST_TYPE,
                "timestamp": now.isoformat(),
                "data": {"endpoint_id": endpoint_id},
            },
            "state": "pending",
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
            "updated_at": now,
        }
        async with self._db.transaction() as conn:
            await self._outbox.add(self._db, conn, [row])
        self._queue.wake({outbox.WEBHOOK_LANE})
        return {**row, "last_status": None, "last_error": None, "attempts_log": []}
