"""The ``webhook`` job: sign one message, POST it, log the attempt, retry or give up.

Messages to one endpoint go out in the order they were written: a message waits while
an older one to the same endpoint is still pending, and each message, once it succeeds
or fails for good, starts the next. Retries follow their own schedule
(``webhooks_retry_seconds``) as timer jobs; after ``webhooks_disable_after`` failed
attempts in a row, across messages, the endpoint is disabled and reported.

An attempt ends after ``webhooks_timeout_seconds`` whatever the receiver does
(``posting``), and the messages of one batch to different endpoints go out side by side
(``CONCURRENT_ENDPOINTS`` at a time, each endpoint's in order): a receiver that answers
slowly holds up its own messages only.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from prometheus_client import Counter

from tidings.kit import ids, metrics
from tidings.kit.clock import Clock
from tidings.kit.db import Database
from tidings.kit.queue import Job, NewJob, Queue
from tidings.webhooks import addresses, outbox, repository
from tidings.webhooks.posting import Attempt, Clients, post
from tidings.webhooks.signing import body_of, signed_headers, signing_secrets

log = logging.getLogger(__name__)

CONCURRENT_ENDPOINTS = 8
"""How many endpoints one batch sends to at once."""


@dataclass(frozen=True)
class SendPolicy:
    """How hard to try: delays between attempts, and when to give up on an endpoint."""

    retry_seconds: tuple[float, ...]
    disable_after: int
    timeout_seconds: float
    allow_private: bool

    @property
    def max_attempts(self) -> int:
        return len(self.retry_seconds) + 1


class WebhookSender:
    """Runs ``webhook`` jobs."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        queue: Queue,
        listeners: outbox.Outbox,
        policy: SendPolicy,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._db = db
        self._clock = clock
        self._queue = queue
        self._outbox = listeners
        self._policy = policy
        self._transport = transport

    async def send(self, jobs: Sequence[Job]) -> None:
        """Send each job's message: oldest first for each endpoint, endpoints side by side.

        Every job is tried before an error is raised again, so one failing message does
        not cut short the sends to other endpoints already under way.
        """
        async with Clients(self._policy.timeout_seconds, transport=self._transport) as clients:
            turns = asyncio.Semaphore(CONCURRENT_ENDPOINTS)

            async def send_in_order(queue: list[Job]) -> None:
                async with turns:
                    for job in queue:
                        await self._send_one(clients, job)

            queues = await self._by_endpoint(jobs)
            outcomes = await asyncio.gather(
                *(send_in_order(queue) for queue in queues), return_exceptions=True
            )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    async def _by_endpoint(self, jobs: Sequence[Job]) -> list[list[Job]]:
        """The jobs in one queue per endpoint, oldest message first; a job whose message
        is gone has a queue of its own (it only completes)."""
        ordered = sorted(jobs, key=lambda j: str(j.payload["message"]))
        async with self._db.reader() as conn:
            endpoint_of = await repository.endpoints_of(
                conn, [str(job.payload["message"]) for job in ordered]
            )
        queues: dict[str, list[Job]] = {}
        for job in ordered:
            message_id = str(job.payload["message"])
            queues.setdefault(endpoint_of.get(message_id, f"gone {message_id}"), []).append(job)
        return list(queues.values())

    async def _send_one(self, clients: Clients, job: Job) -> None:
        async with self._db.reader() as conn:
            message = await repository.message(conn, job.payload["message"])
            endpoint = (
                None if message is None else await repository.endpoint(conn, message["endpoint_id"])
            )
            waiting = message is not None and await repository.has_pending_before(
                conn, message["endpoint_id"], message["id"]
            )
        if (
            message is None
            or endpoint is None
            or message["state"] != "pending"
            or not endpoint["enabled"]
            or waiting
        ):
            # Nothing to send now: sent already, the endpoint is gone or disabled (turning
            # it on again restarts its messages), or an older message goes first and
            # starts this one when it is done.
            async with self._db.transaction() as conn:
                await self._queue.complete(conn, [job])
            return
        attempt = await self._post(clients, endpoint, message)
        await self._settle(job, endpoint, message, attempt)

    async def _post(
        self, clients: Clients, endpoint: Mapping[str, Any], message: Mapping[str, Any]
    ) -> Attempt:
        body = body_of(message["payload"])
        now = self._clock.now()
        headers = signed_headers(signing_secrets(endpoint, now), message["msg_id"], now, body)
        headers["content-type"] = "application/json"
        return await post(
            clients,
            endpoint["url"],
            body.encode("utf-8"),
            headers,
            allow_private=self._policy.allow_private,
        )

    async def _settle(
        self,
        job: Job,
        endpoint: Mapping[str, Any],
        message: Mapping[str, Any],
        attempt: Attempt,
    ) -> None:
        """Log the attempt and decide what comes next, in one transaction.

        Long on purpose: the attempt's log, the message's state, the next try and the
        endpoint's disabling are written together, and read best together."""
        now = self._clock.now()
        number = int(message["attempts"]) + 1
        final = attempt.ok or number >= self._policy.max_attempts
        disabled = False
        async with self._db.transaction() as conn:
            await repository.add_attempt(
                conn,
                {
                    "id": ids.new_id(),
                    "message_id": message["id"],
                    "at": now,
                    "status": attempt.status,
                    "error": attempt.error,
                    "duration_ms": attempt.duration_ms,
                    "response": attempt.response,
                },
            )
            if attempt.ok:
                await repository.update_endpoint(conn, endpoint["id"], {"consecutive_failures": 0})
            else:
                failures = await repository.count_failure(conn, endpoint["id"])
                if failures >= self._policy.disable_after:
                    disabled = True
                    await repository.update_endpoint(
                        conn,
                        endpoint["id"],
                        {
                            "enabled": False,
                            "disabled_at": now,
                            "disabled_reason": (
                                f"{failures} failed attempts in a row; last: {attempt.error}"
                            ),
                            "updated_at": now,
                        },
                    )
            next_at = (
                None
                if final
                else now + dt.timedelta(seconds=self._policy.retry_seconds[number - 1])
            )
            await repository.update_message(
                conn,
                message["id"],
                {
                    "state": "succeeded" if attempt.ok else "failed" if final else "pending",
                    "attempts": number,
                    "next_attempt_at": next_at,
                    "last_status": attempt.status,
                    "last_error": attempt.error,
                    "updated_at": now,
                },
            )
            follow: list[NewJob] = []
            if not disabled and next_at is not None:
                follow.append(
                    dataclasses.replace(
                        outbox.message_job(message["id"], f"retry {number}"), run_at=next_at
                    )
                )
            elif not disabled:
                after = await repository.first_pending(conn, endpoint["id"], message["id"])
                if after is not None:
                    follow.append(outbox.message_job(after, f"after {message['id']}"))
            await self._queue.enqueue(conn, follow)
            await self._queue.complete(conn, [job])
        measures(self._db).attempts.labels("ok" if attempt.ok else "failed").inc()
        if disabled:
            self._outbox.invalidate()
            measures(self._db).disabled.inc()
            # The URL's path and query may hold the receiver's token: the host only.
            log.warning(
                "webhook endpoint %s (%s) disabled after %d failed attempts in a row: %s",
                endpoint["id"],
                addresses.shown(endpoint["url"]),
                self._policy.disable_after,
                attempt.error,
            )


@dataclass(frozen=True)
class Measures:
    attempts: Counter
    disabled: Counter


_measures: weakref.WeakKeyDictionary[Database, Measures] = weakref.WeakKeyDictionary()


def measures(db: Database) -> Measures:
    """The webhook metrics, in the registry of the process's other metrics."""
    found = _measures.get(db)
    if found is None:
        registry = metrics.of(db).registry
        found = _measures[db] = Measures(
            attempts=Counter(
                "tidings_webhook_attempts",
                "Attempts at sending webhook messages, by outcome (ok, failed).",
                ["outcome"],
                registry=registry,
            ),
            disabled=Counter(
                "tidings_webhook_endpoints_disabled",
                "Webhook endpoints disabled because they kept failing.",
                registry=registry,
            ),
        )
    return found
