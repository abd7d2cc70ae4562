"""Cancellation meets sending: a delivery of a cancelled event is not sent, and one
being handed over when its event is cancelled is not cancelled; never both.

At read, a delivery whose event is cancelled is suppressed (reason ``cancelled``):
one that went back to waiting for a retry after the cancellation, say. Before the first
hand-over (and after each commit, for what was not claimed yet) the sender claims the
deliveries it is about to hand over, in one statement: those a cancellation (or an
erasure, or an earlier run) moved since the read are not claimed, and are not sent. A
cancellation leaves claimed deliveries alone; the claim ends with the outcome recorded,
or when the jobs' lease runs out (a worker that died: the job runs again and claims them
anew; a job given back runs again at once and takes its claims over). The sender starts
no hand-over once half the lease is gone, so a hand-over has at least half the lease to
end before its claim does; one slower than that (a provider taking longer than the half
lease to answer) can still be cancelled while on its way."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence

from tidings.channels.sending import Batch, Outgoing
from tidings.delivery import stopping_repository
from tidings.delivery.sender import Middleware
from tidings.kit import job_context
from tidings.kit.clock import Clock
from tidings.kit.db import Database
from tidings.planning.planner import SuppressionReason


class Claims(Middleware):
    """A claim lasts as long as the jobs' lease: once the lease is over, the job runs
    again elsewhere (its worker died) and claims its deliveries anew."""

    name = "claims"

    def __init__(self, clock: Clock, lease: dt.timedelta) -> None:
        self._clock = clock
        self._lease = lease

    def _claim_for(self) -> dt.timedelta:
        """What is left of the running jobs' lease (the whole lease outside a job)."""
        run = job_context.current()
        if run is None or run.lease_ends is None:
            return self._lease
        left = run.lease_ends - asyncio.get_running_loop().time()
        return dt.timedelta(seconds=max(0.0, left))

    def screen(self, item: Outgoing, batch: Batch) -> str | None:
        event = item.event
        if event is not None and event.get("cancelled_at") is not None:
            return SuppressionReason.CANCELLED.value
        return None

    async def drop(self, db: Database, batch: Batch, waiting: Sequence[Outgoing]) -> set[str]:
        claimed: set[str] = batch.found.setdefault(self.name, set())
        wanted = [item.delivery["id"] for item in waiting if item.delivery["id"] not in claimed]
        if not wanted:
            return set()
        now = self._clock.now()
        async with db.transaction() as conn:
            got = await stopping_repository.claim(conn, wanted, now + self._claim_for())
        claimed |= got
        return {item.job.id for item in waiting if item.delivery["id"] not in claimed}
