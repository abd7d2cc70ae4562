"""Group commit for single-event requests.

Each ``POST /v1/events`` waits on a future while a background task writes whatever
requests arrived together in one transaction: one commit serves many requests, which is
what lets single-event ingest keep pace with an endpoint that writes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from tidings.events.service import EventsService, Outcome, Prepared

log = logging.getLogger(__name__)


class GroupCommitter:
    """Collects prepared events and writes them in groups of up to ``max_group``."""

    def __init__(self, service: EventsService, *, max_group: int = 500) -> None:
        self._service = service
        self._max_group = max_group
        self._pending: asyncio.Queue[tuple[Prepared, asyncio.Future[Outcome]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="tidings-group-commit")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def submit(self, item: Prepared) -> Outcome:
        """Write one event with whichever others are waiting; returns once committed."""
        if self._task is None:
            return (await self._service.write_group([item], atomic=True))[0]
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
            log.exception("group commit of %d events failed", len(group))
            for _, future in group:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), outcome in zip(group, outcomes, strict=True):
            if not future.done():
                future.set_result(outcome)
