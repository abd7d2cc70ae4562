"""A batch's window of deliveries on their way, for the sender (``sender.py``): what is
waiting, being composed, composed, and being handed over, and the outcomes decided but
not committed yet."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from tidings.channels.sending import Batch, Carrier, Outgoing, Refused, Result
from tidings.delivery.repository import StateChange
from tidings.delivery.states import DeliveryState
from tidings.kit.queue import Job

COMMIT_EVERY = 32
"""The most deliveries a batch has handed over (or is handing over) without their
outcome committed: a worker that dies mid-batch sends again at most this many. Outcomes
are committed half this many at a time, while the other half are on their way: enough to
keep a pool of SMTP connections busy, and few commits (each costs about what a dozen
state changes do)."""

CHUNK = 16
"""Deliveries composed at a time: the first are on their way while the next are being
composed."""


@dataclass
class Window:
    """The outcomes decided but not committed yet."""

    changes: list[StateChange] = field(default_factory=list)
    finished: list[Job] = field(default_factory=list)
    retries: list[tuple[Job, str]] = field(default_factory=list)
    buried: list[tuple[Job, str]] = field(default_factory=list)

    def suppress(self, item: Outgoing, reason: str, detail: str | None = None) -> None:
        self.changes.append(
            StateChange(item.delivery["id"], DeliveryState.SUPPRESSED, reason, detail)
        )
        self.finished.append(item.job)

    def fail(self, item: Outgoing, refused: Refused) -> None:
        self.changes.append(
            StateChange(
                item.delivery["id"],
                DeliveryState.FAILED,
                refused.reason,
                refused.detail,
                fields=dict(refused.fields),
            )
        )
        self.finished.append(item.job)


class Flow:
    """One carrier's share of a batch on its way: waiting to be composed, being
    composed (chunks, in order), composed and waiting to be handed over (``todo``), and
    being handed over (``flying``)."""

    def __init__(self, carrier: Carrier, batch: Batch, size: int, waiting: deque[Outgoing]) -> None:
        self.carrier = carrier
        self.batch = batch
        self.size = size
        self.waiting = waiting
        self.todo: deque[tuple[Outgoing, Any]] = deque()
        self.composing: deque[tuple[asyncio.Future[list[Any]], list[Outgoing]]] = deque()
        self.flying: dict[asyncio.Future[Result], Outgoing] = {}
        self.dropped: set[str] = set()
        self._ahead = max(1, carrier.compose_ahead(size))
        self._in_flight = max(1, carrier.in_flight())

    def compose_more(self) -> None:
        """Start composing chunks until ``compose_ahead`` of them are on the way."""
        while self.waiting and len(self.composing) < self._ahead:
            chunk = [self.waiting.popleft() for _ in range(min(CHUNK, len(self.waiting)))]
            composed = asyncio.ensure_future(
                self.carrier.compose(chunk, self.batch.read_at, batch_size=self.size)
            )
            self.composing.append((composed, chunk))

    def take_composed(self, window: Window) -> None:
        """Move the chunks composed so far, in order, to ``todo``; fail what could not
        be composed, finish what was dropped meanwhile."""
        while self.composing and self.composing[0][0].done():
            composed, chunk = self.composing.popleft()
            for item, ready in zip(chunk, composed.result(), strict=True):
                if isinstance(ready, Refused):
                    window.fail(item, ready)
                elif item.job.id in self.dropped:
                    window.finished.append(item.job)
                else:
                    self.todo.append((item, ready))

    def room(self, unrecorded: int) -> bool:
        """Whether one more may be handed over: fewer on their way than the carrier
        sends at once, and fewer than ``COMMIT_EVERY`` handed over and not recorded."""
        flying = len(self.flying)
        return flying < self._in_flight and flying + unrecorded < COMMIT_EVERY

    async def next_outcomes(self) -> list[tuple[Outgoing, Result]]:
        """Wait for hand-overs to end (or the next chunk to be composed); the items
        that ended, with their results."""
        watched: set[asyncio.Future[Any]] = set(self.flying)
        if self.composing:
            watched.add(self.composing[0][0])
        done, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        ended: list[tuple[Outgoing, Result]] = []
        for future in done:
            sent = self.flying.pop(future, None)
            if sent is not None:  # else a chunk is composed: taken in order
                ended.append((sent, future.result()))
        return ended

    def unsent(self) -> list[Outgoing]:
        """Every item not handed over yet."""
        return [
            *self.waiting,
            *(item for item, _ in self.todo),
            *(item for _, chunk in self.composing for item in chunk),
        ]

    def take_out(self, dropped: set[str]) -> list[Job]:
        """Take the items of ``dropped`` jobs out of ``waiting`` and ``todo``; returns
        their jobs (those being composed are finished when taken)."""
        gone = [item.job for item in self.waiting if item.job.id in dropped]
        gone += [item.job for item, _ in self.todo if item.job.id in dropped]
        kept = [item for item in self.waiting if item.job.id not in dropped]
        self.waiting.clear()
        self.waiting.extend(kept)
        ready = [(item, done) for item, done in self.todo if item.job.id not in dropped]
        self.todo.clear()
        self.todo.extend(ready)
        return gone

    def abandon(self) -> list[Job]:
        """Stop: everything not handed over yet is given up; returns the jobs."""
        jobs = [item.job for item in self.unsent()]
        self.todo.clear()
        self.waiting.clear()
        for composed, _ in self.composing:
            composed.cancel()
        self.composing.clear()
        return jobs

    async def cancel(self) -> None:
        """Cancel what is still on its way and wait for it to end."""
        for future in self.flying:
            future.cancel()
        for composed, _ in self.composing:
            composed.cancel()
        await asyncio.gather(
            *self.flying, *(composed for composed, _ in self.composing), return_exceptions=True
        )
