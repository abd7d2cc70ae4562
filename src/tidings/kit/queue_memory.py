"""The queue's in-memory twin, for unit tests: the same contract, no database."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.kit.clock import Clock
from tidings.kit.queue import SCHEDULE_SLACK, Job, LocalQueue, NewJob, scheduled_at


class InMemoryQueue(LocalQueue):
    """The queue's twin for unit tests: same contract, no database, no durability.

    ``enqueue`` and ``complete`` ignore the connection, so they are not transactional.
    """

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        super().__init__()
        self.jobs: dict[str, dict[str, Any]] = {}
        self.dead: dict[str, tuple[Job, str]] = {}

    async def start(self, *, consume: bool, member: str, relay_poll: float | None = None) -> None:
        pass

    async def enqueue(self, conn: AsyncConnection | None, new_jobs: Sequence[NewJob]) -> None:
        now = self._clock.now()
        for job in new_jobs:
            self.jobs.setdefault(
                job.id,
                {
                    "job": job,
                    "run_at": job.run_at or now,
                    "scheduled_at": scheduled_at(job, now),
                    "attempts": 0,
                    "lease_until": None,
                },
            )

    async def claim(
        self,
        worker_id: str,
        limit: int,
        lease: dt.timedelta,
        lanes: Collection[int] | None = None,
    ) -> list[Job]:
        now = self._clock.now()
        for entry in self.jobs.values():
            asked_at = entry["scheduled_at"]
            if asked_at is not None and asked_at > now + SCHEDULE_SLACK:
                entry["run_at"] = now + max(dt.timedelta(0), entry["run_at"] - asked_at)
                entry["scheduled_at"] = now
        due = sorted(
            (
                entry
                for entry in self.jobs.values()
                if (lanes is None or entry["job"].lane in lanes)
                and entry["run_at"] <= now
                and (entry["lease_until"] is None or entry["lease_until"] < now)
            ),
            key=lambda entry: (entry["job"].lane, entry["run_at"]),
        )[:limit]
        claimed = []
        for entry in due:
            entry["attempts"] += 1
            entry["lease_until"] = now + lease
            new: NewJob = entry["job"]
            claimed.append(
                Job(
                    new.id,
                    new.kind,
                    new.payload,
                    new.lane,
                    entry["attempts"],
                    worker_id,
                    headers=new.headers,
                )
            )
        return claimed

    async def complete(self, conn: AsyncConnection | None, done: Sequence[Job]) -> None:
        for job in done:
            self.jobs.pop(job.id, None)

    async def settle(self, done: Sequence[Job]) -> None:
        pass

    async def retry(self, job: Job, error: str, run_at: dt.datetime) -> None:
        entry = self.jobs[job.id]
        entry["run_at"] = run_at
        entry["scheduled_at"] = self._clock.now()
        entry["lease_until"] = None

    async def release(self, job: Job) -> None:
        entry = self.jobs[job.id]
        entry["lease_until"] = None
        entry["attempts"] = max(entry["attempts"] - 1, 0)
        self.wake({job.lane})

    async def bury(self, job: Job, error: str) -> None:
        self.jobs.pop(job.id, None)
        self.dead[job.id] = (job, error)

    async def depth(self) -> int:
        return len(self.jobs)
