"""Group commit for single-event requests.

Each ``POST /v1/events`` waits on a future while a background task writes whatever
requests arrived together in one transaction: one commit serves many requests, which is
what lets single-event ingest keep pace with an endpoint that writes nothing. A group
that fails is written again in halves, down to the one request at fault: no request
fails for another's event.

On PostgreSQL several groups are written at once, each on its own connection: a group's
statements are round trips to the server, and while one group waits on them the next
is written instead of waiting too. SQLite has one writer connection: one group at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import sqlalchemy as sa

from tidings.events.service import EventsService, Outcome, Prepared
from tidings.kit import errors, outage

log = logging.getLogger(__name__)


class GroupCommitter:
    """Collects prepared events and writes them in groups of up to ``max_group``."""

    def __init__(
        self, service: EventsService, *, max_group: int = 500, writers: int | None = None
    ) -> None:
        self._service = service
        self._max_group = max_group
        self._writers = writers if writers is not None else service.concurrent_writers
        self._pending: asyncio.Queue[tuple[Prepared, asyncio.Future[Outcome]]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._run(), name=f"tidings-group-commit-{number}")
                for number in range(self._writers)
            ]

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def submit(self, item: Prepared) -> Outcome:
        """Write one event with whichever others are waiting; returns once committed."""
        if not self._tasks:
            try:
                return (await self._service.write_group([item], atomic=True))[0]
            except Exception as exc:
                raise (refusal(exc) or exc) from exc
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        await self._pending.put((item, future))
        return await future

    async def _run(self) -> None:
        while True:
            group = [await self._pending.get()]
            while len(group) < self._max_group and not self._pending.empty():
                group.append(self._pending.get_nowait())
            await self._write(group)

    async def _write(self, group: list[tuple[Prepared, asyncio.Future[Outcome]]]) -> None:
        try:
            outcomes = await self._service.write_group([item for item, _ in group], atomic=False)
        except Exception as exc:
            await self._isolate(group, exc)
            return
        for (_, future), outcome in zip(group, outcomes, strict=True):
            if not future.done():
                future.set_result(outcome)

    async def _isolate(
        self, group: list[tuple[Prepared, asyncio.Future[Outcome]]], exc: Exception
    ) -> None:
        """One request's event failed the whole group's write: write each half again, so
        that only the one at fault gets the error and every other request its answer.

        A database outage fails every request alike (a 503 each): no half would fare
        better, and trying would only keep the database busier."""
        if outage.is_unavailable(exc) or len(group) == 1:
            error = refusal(exc) or exc
            if error is exc and not outage.is_unavailable(exc):
                log.error("writing event %s failed", group[0][0].event_id, exc_info=exc)
            for _, future in group:
                if not future.done():
                    future.set_exception(error)
            return
        log.warning("a group of %d events failed (%r); writing its halves apart", len(group), exc)
        half = len(group) // 2
        await self._write(group[:half])
        await self._write(group[half:])


def refusal(exc: Exception) -> errors.TidingsError | None:
    """The caller's error for an event the database refused for its values (a value too
    long for its column, out of a type's range, against a constraint), if that is what
    ``exc`` says; None for any other failure."""
    if isinstance(exc, sa.exc.DataError | sa.exc.IntegrityError):
        reason = str(exc.orig).splitlines()[0] if exc.orig is not None else type(exc).__name__
        return errors.Invalid(
            f"The database refused this event: {reason}. Change the values it names.",
            field="body",
        )
    return None
