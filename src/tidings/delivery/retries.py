"""Retries, written once: a job that may go through later runs again after a backoff
(exponential, capped, jittered), until its attempts run out; then it goes to the dead
letters. The worker applies it to a handler that failed, the sender to a channel that
answered "later"."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from tidings.kit.queue import Job, Queue, backoff

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    base_seconds: float
    cap_seconds: float

    def exhausted(self, job: Job) -> bool:
        """Whether ``job`` has had every attempt it gets."""
        return job.attempts >= self.max_attempts

    def delay(self, job: Job) -> float:
        """Seconds before ``job``'s next attempt."""
        return backoff(job.attempts, base=self.base_seconds, cap=self.cap_seconds)


async def retry_or_bury(
    queue: Queue, job: Job, error: str, policy: RetryPolicy, now: dt.datetime
) -> bool:
    """Run ``job`` again after its backoff, or dead-letter it when its attempts are
    spent; returns whether it will run again."""
    if policy.exhausted(job):
        log.error("job %s dead-lettered after %d attempts: %s", job.id, job.attempts, error)
        await queue.bury(job, error)
        return False
    delay = policy.delay(job)
    log.warning(
        "job %s failed (attempt %d), retrying in %.1fs: %s", job.id, job.attempts, delay, error
    )
    await queue.retry(job, error, now + dt.timedelta(seconds=delay))
    return True
