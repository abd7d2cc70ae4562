"""Producers publish events on NATS; Tidings takes them in like ``POST /v1/events``.

A producer publishes one event (the same JSON as the HTTP body) on
``<prefix>.ingest.<key prefix>``, where the last token is the public prefix of one of
its API keys (``tdg_<prefix>_…``). The subject is the authorization: NATS permissions
let each team's NATS user publish only on its own key's subject, and Tidings checks the
event against that key's scopes, exactly as it checks an HTTP request's. A message may
also carry ``Authorization: Bearer <key>``; it must then be that same key.

The subjects are captured by a JetStream stream, so an event published while no Tidings
process runs waits for one. Tidings' own idempotency keys hold as for HTTP, per API key
(the one the subject names), across every way in. Producers are told not to set
``Nats-Msg-Id``: the stream compares it across every key's subject, so one team could
make the stream drop another's messages by publishing their ids first.

An event Tidings refuses is never dropped silently: it goes, with the error (code,
message, field — the same as the HTTP answer's), onto ``<prefix>.rejected.<key
prefix>`` in a stream kept for 30 days, where the producer can read why. An event that
cannot be stored for a reason that may pass (the database is down) is redelivered with
backoff; after its last delivery it is rejected with ``unavailable``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import pydantic
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from nats.js.errors import BadRequestError

from tidings.auth.keys import ApiKey
from tidings.auth.service import AuthService
from tidings.events.schemas import EventIn
from tidings.events.service import EventsService, Prepared
from tidings.kit import errors
from tidings.kit.clock import Clock
from tidings.kit.http import invalid
from tidings.kit.jetstream import connect

log = logging.getLogger(__name__)

CONSUMER = "ingest"
REJECTED_AGE = dt.timedelta(days=30)
DUPLICATE_WINDOW = dt.timedelta(minutes=2)
_PULL_SECONDS = 2.0
_BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0)


@dataclass(frozen=True)
class IngestTopology:
    prefix: str
    replicas: int = 1
    max_deliver: int = 6
    ack_wait: dt.timedelta = dt.timedelta(seconds=30)

    @property
    def stream(self) -> str:
        return f"{self.prefix}_ingest".upper()

    @property
    def rejected_stream(self) -> str:
        return f"{self.prefix}_rejected".upper()

    def subject(self, key_prefix: str) -> str:
        """Where a producer holding the key with ``key_prefix`` publishes."""
        return f"{self.prefix}.ingest.{key_prefix}"

    def rejected_subject(self, key_prefix: str) -> str:
        return f"{self.prefix}.rejected.{key_prefix}"


@dataclass
class _Arrival:
    msg: Msg
    key_prefix: str
    prepared: Prepared | None = None
    error: errors.TidingsError | None = None
    failure: Exception | None = None


class BrokerIngest:
    """Pulls events from the ingest stream in batches and stores them through the events
    service: a batch's valid events are written in one transaction, then acknowledged;
    refused ones go to the rejected stream first, then are acknowledged."""

    def __init__(
        self,
        servers: Sequence[str],
        topology: IngestTopology,
        auth: AuthService,
        events: EventsService,
        clock: Clock,
        *,
        batch: int = 200,
        name: str = "tidings-ingest",
    ) -> None:
        self._servers = list(servers)
        self.topology = topology
        self._auth = auth
        self._events = events
        self._clock = clock
        self._batch = batch
        self._name = name
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.accepted = 0
        self.rejected = 0

    async def start(self) -> None:
        """Connect, make sure the streams and the consumer exist, and start pulling."""
        self._nc = await connect(self._servers, name=self._name)
        self._js = self._nc.jetstream(timeout=10)
        await ensure_ingest_streams(self._js, self.topology)
        subscription = await self._js.pull_subscribe(
            f"{self.topology.prefix}.ingest.>",
            durable=CONSUMER,
            stream=self.topology.stream,
        )
        self._stopping = False
        self._task = asyncio.create_task(self._serve(subscription), name="tidings-ingest")

    async def close(self) -> None:
        self._stopping = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._nc is not None:
            await self._nc.close()
            self._nc = None

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    async def _serve(self, subscription: Any) -> None:
        while not self._stopping:
            try:
                msgs = await subscription.fetch(self._batch, timeout=_PULL_SECONDS)
            except TimeoutError:
                continue
            except Exception:
                log.exception("pulling from the ingest stream failed; trying again shortly")
                await asyncio.sleep(1.0)
                continue
            try:
                await self.take(msgs)
            except Exception:
                log.exception("taking in %d events failed; they will be redelivered", len(msgs))

    async def take(self, msgs: Sequence[Msg]) -> None:
        """Store the valid events of ``msgs`` and reject the rest; every message is
        acknowledged once its outcome is durable. Whatever could not be settled (an
        unexpected failure, the database or the rejected stream down) is handed back
        to the stream with a backoff, never left to wait out its ack timeout."""
        settled: set[int] = set()
        try:
            await self._take(msgs, settled)
        except BaseException:
            for msg in msgs:
                if id(msg) in settled:
                    continue
                if (msg.metadata.num_delivered or 1) >= self.topology.max_deliver:
                    # Its last delivery: the stream keeps it, but no consumer will be
                    # given it again. Say where it is.
                    log.error(
                        "an ingested event could neither be stored nor rejected after its "
                        "last delivery; it stays in stream %s at sequence %d (subject %s)",
                        self.topology.stream,
                        msg.metadata.sequence.stream,
                        msg.subject,
                    )
                with contextlib.suppress(Exception):
                    await msg.nak(delay=_backoff(msg))
            raise

    async def _take(self, msgs: Sequence[Msg], settled: set[int]) -> None:
        arrivals = [await self._check(msg) for msg in msgs]
        transient = [a for a in arrivals if a.failure is not None]
        valid = [a for a in arrivals if a.prepared is not None]
        if valid:
            try:
                outcomes = await self._events.write_group(
                    [a.prepared for a in valid if a.prepared is not None], atomic=False
                )
            except Exception as exc:
                for arrival in valid:
                    arrival.failure = exc
                transient += valid
                valid = []
            else:
                for arrival, outcome in zip(valid, outcomes, strict=True):
                    if outcome.conflict is not None:
                        arrival.error = outcome.conflict
        # Stored events are acknowledged first: a failure below must not make the
        # stream deliver them again (it would be harmless, but wasted).
        for arrival in valid:
            if arrival.error is None:
                await arrival.msg.ack()
                settled.add(id(arrival.msg))
                self.accepted += 1
        for arrival in transient:
            if await self._retry_later(arrival):
                settled.add(id(arrival.msg))
        for arrival in arrivals:
            if arrival.error is not None:
                await self._reject(arrival, arrival.error)
                await arrival.msg.ack()
                settled.add(id(arrival.msg))
                self.rejected += 1

    async def _check(self, msg: Msg) -> _Arrival:
        prefix = f"{self.topology.prefix}.ingest."
        tokens = msg.subject.removeprefix(prefix).split(".")
        # A refusal goes to the rejected subject of the first token, where the producer
        # holding that key looks.
        arrival = _Arrival(msg, tokens[0])
        try:
            if len(tokens) != 1:
                raise errors.Unauthenticated(
                    f"Publish on {prefix}<key prefix>: the one token after {prefix!r} "
                    f"names the key, and {msg.subject!r} has {len(tokens)} there.",
                    field="subject",
                )
            key = await self._key(arrival.key_prefix, (msg.headers or {}).get("Authorization"))
            try:
                event = EventIn.model_validate_json(msg.data)
            except pydantic.ValidationError as exc:
                raise invalid(exc.errors()) from exc
            arrival.prepared = self._events.prepare(key, event)
        except errors.TidingsError as exc:
            arrival.error = exc
        except Exception as exc:
            # Not the event's fault (the database did not answer, say): try it again.
            arrival.failure = exc
        return arrival

    async def _key(self, key_prefix: str, authorization: str | None) -> ApiKey:
        key = await self._auth.key_by_prefix(key_prefix)
        if authorization is not None:
            presented = await self._auth.authenticate_key(authorization)
            if presented.id != key.id:
                raise errors.Forbidden(
                    "The Authorization header holds another key than the subject names.",
                    field="authorization",
                )
        return key

    async def _retry_later(self, arrival: _Arrival) -> bool:
        """Hand ``arrival`` back to the stream with a backoff (True), or, after its last
        delivery, mark it to be rejected as ``unavailable`` (False)."""
        exc = arrival.failure
        delivered = arrival.msg.metadata.num_delivered or 1
        if delivered >= self.topology.max_deliver:
            arrival.error = errors.Unavailable(
                f"Tidings could not store the event after {delivered} deliveries: "
                f"{type(exc).__name__}. Publish it again with the same idempotency key."
            )
            return False
        delay = _backoff(arrival.msg)
        log.warning("storing an ingested event failed (%r); again in %.0fs", exc, delay)
        await arrival.msg.nak(delay=delay)
        return True

    async def _reject(self, arrival: _Arrival, error: errors.TidingsError) -> None:
        if self._js is None:
            raise RuntimeError("the broker ingest is not started")
        body = {
            **error.body(),
            "subject": arrival.msg.subject,
            "rejected_at": self._clock.now().isoformat(),
            "event": arrival.msg.data.decode("utf-8", "replace"),
        }
        sequence = arrival.msg.metadata.sequence.stream
        await self._js.publish(
            self.topology.rejected_subject(arrival.key_prefix),
            orjson.dumps(body),
            headers={
                "Nats-Msg-Id": f"rejected-{sequence}",
                "Tidings-Error-Code": error.code,
            },
        )


def _backoff(msg: Msg) -> float:
    delivered = msg.metadata.num_delivered or 1
    return _BACKOFF[min(delivered, len(_BACKOFF)) - 1]


async def ensure_ingest_streams(js: JetStreamContext, topology: IngestTopology) -> None:
    """The ingest stream (work queue) and the rejected stream (kept 30 days)."""
    configs = [
        api.StreamConfig(
            name=topology.stream,
            subjects=[f"{topology.prefix}.ingest.>"],
            retention=api.RetentionPolicy.WORK_QUEUE,
            storage=api.StorageType.FILE,
            num_replicas=topology.replicas,
            duplicate_window=DUPLICATE_WINDOW.total_seconds(),
        ),
        api.StreamConfig(
            name=topology.rejected_stream,
            subjects=[f"{topology.prefix}.rejected.>"],
            retention=api.RetentionPolicy.LIMITS,
            storage=api.StorageType.FILE,
            num_replicas=topology.replicas,
            max_age=REJECTED_AGE.total_seconds(),
            duplicate_window=DUPLICATE_WINDOW.total_seconds(),
        ),
    ]
    for config in configs:
        try:
            await js.add_stream(config)
        except BadRequestError:
            # It exists with another shape (other replicas, say): keep it as it is.
            log.info("stream %s exists with another configuration; left as is", config.name)
    with contextlib.suppress(BadRequestError):
        await js.add_consumer(
            topology.stream,
            api.ConsumerConfig(
                durable_name=CONSUMER,
                ack_policy=api.AckPolicy.EXPLICIT,
                ack_wait=topology.ack_wait.total_seconds(),
                max_deliver=topology.max_deliver,
            ),
        )
