"""How the worker's priority lanes share one process (its event loop, and on SQLite its
one writer): a lower lane gives way to the more urgent batches running, for a moment at
most; for a while after a more urgent lane last had work, its batches are sized to run
``BATCH_SECONDS``, not a full batch; and each loop claims as many jobs as, by their
weight, make one batch."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Collection, Iterator

from tidings.delivery.job_runner import Task
from tidings.kit.db import Database
from tidings.kit.queue import Job

# The worker's log: its lines keep one logger name, whichever of its modules writes them.
log = logging.getLogger("tidings.delivery.worker")

BATCH_SECONDS = 0.05
"""How long a batch of a lane below one that had work lately is sized to run."""

URGENT_MEMORY_SECONDS = 5.0
"""How long after a more urgent lane last claimed jobs a lane keeps its batches short."""

GIVE_WAY_SECONDS = 0.1
"""The longest a lane waits for more urgent batches to end before it claims."""


class LaneTraffic:
    """The batches the worker's loops are running, and when each lane last claimed jobs:
    what a lower lane gives way to."""

    def __init__(self, give_way_seconds: float) -> None:
        """A lane waits up to ``give_way_seconds`` for more urgent batches to end."""
        self._give_way_seconds = give_way_seconds
        self._running: dict[asyncio.Future[None], int] = {}
        """The batches running in the loops, each with the most urgent lane it serves."""
        self._claimed_at: dict[int, float] = {}
        """Per lane served by a loop, when (event loop time) its loop last claimed jobs."""

    def claimed(self, lanes: Collection[int], at: float) -> None:
        """Note that the loop of ``lanes`` claimed jobs at ``at`` (event loop time)."""
        self._claimed_at[min(lanes)] = at

    @contextlib.contextmanager
    def running(self, lanes: Collection[int]) -> Iterator[None]:
        """Count a batch of ``lanes`` as running while the block runs."""
        batch = asyncio.get_running_loop().create_future()
        self._running[batch] = min(lanes)
        try:
            yield
        finally:
            del self._running[batch]
            batch.set_result(None)

    async def give_way(self, lanes: Collection[int]) -> None:
        """Wait, ``give_way_seconds`` at most, for the batches of more urgent lanes that
        are running to end."""
        urgent = [batch for batch, lane in self._running.items() if lane < min(lanes)]
        if urgent:
            await asyncio.wait(urgent, timeout=self._give_way_seconds)

    def urged(self, lanes: Collection[int]) -> bool:
        """Whether a more urgent lane than ``lanes`` claimed jobs lately."""
        since = asyncio.get_running_loop().time() - URGENT_MEMORY_SECONDS
        return any(lane < min(lanes) and at > since for lane, at in self._claimed_at.items())


class BatchSizing:
    """How much a loop claims next: jobs that, if they weigh what the last ones did, make
    one batch (heavy jobs are not leased long before they can run); and, when asked for
    a short batch, work that runs about the seconds asked for if each unit of weight
    takes what the last ones took."""

    def __init__(self, batch_size: int) -> None:
        self._batch_size = batch_size
        self._by_weight = 1
        self._jobs_per_weight = 1.0
        self._seconds_per_weight = 0.0

    def budget(self, seconds: float | None) -> int | None:
        """The weight that runs about ``seconds`` (a tenth of a batch at least: a busy
        machine stretches the time each takes, and each batch costs some more); None
        when not asked, or not known yet."""
        if seconds is None or self._seconds_per_weight <= 0:
            return None
        least = max(1, self._batch_size // 10)
        return min(self._batch_size, max(least, int(seconds / self._seconds_per_weight)))

    def limit(self, budget: int | None) -> int:
        """How many jobs to claim, for a batch of at most ``budget`` weight if given."""
        if budget is None:
            return self._by_weight
        return max(1, min(self._by_weight, int(budget * self._jobs_per_weight)))

    def ran(self, claimed: int, weight: int, seconds: float) -> None:
        """Take in a batch of ``claimed`` jobs weighing ``weight`` that ran ``seconds``."""
        if not claimed:
            return
        weight = max(weight, 1)
        self._by_weight = max(1, min(self._batch_size, self._batch_size * claimed // weight))
        self._jobs_per_weight = claimed / weight
        self._seconds_per_weight = seconds / weight


def portions(task: Task | None, group: list[Job], most: int) -> Iterator[tuple[list[Job], int]]:
    """``group`` cut into runs of at most ``most`` work each (a job heavier than that
    runs alone), with the weight of each."""
    portion: list[Job] = []
    portion_weight = 0
    for job in group:
        weight = _weigh(task, job)
        if portion and portion_weight + weight > most:
            yield portion, portion_weight
            portion, portion_weight = [], 0
        portion.append(job)
        portion_weight += weight
    if portion:
        yield portion, portion_weight


async def make_way(db: Database) -> None:
    """Let the other lanes' loops in before taking the database again: on SQLite they all
    wait for one writer connection, which its pool gives to whoever asks first once it is
    back, not to whoever has waited longest. PostgreSQL gives each its own connection:
    there a turn of the event loop would only add to the job's wait."""
    if not db.is_postgres:
        await asyncio.sleep(0)


def _weigh(task: Task | None, job: Job) -> int:
    """The job's weight; one when its task does not say, or cannot tell because the job
    is malformed (its handler then fails it, and retries or buries it as usual)."""
    if task is None or task.weight is None:
        return 1
    try:
        return max(1, task.weight(job))
    except Exception:
        log.warning("cannot weigh job %s; counting it as one", job.id, exc_info=True)
        return 1
