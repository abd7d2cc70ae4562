"""What the current task is working for: which job kind (the pipeline stage) and which
attempt. The worker sets it around each handler call; whatever the handler writes (a
delivery's transitions, a log line, a span) can say where it came from without every
function passing it along."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True)
class JobRun:
    stage: str
    """The job kind: ``plan``, ``fanout``, ``in_app``, ``email``, ``digest``…"""
    attempt: int
    """1 on the first run; for a batch, the highest attempt among its jobs."""
    lease_ends: float | None = None
    """When (event loop time) the batch's lease runs out and another worker may take its
    jobs; None when the caller did not say."""


_current: ContextVar[JobRun | None] = ContextVar("tidings_job_run", default=None)


def current() -> JobRun | None:
    """The job run the calling code works for, or None outside the worker (the API)."""
    return _current.get()


@contextlib.contextmanager
def running(stage: str, attempt: int, lease_ends: float | None = None) -> Iterator[JobRun]:
    run = JobRun(stage, attempt, lease_ends)
    token = _current.set(run)
    try:
        yield run
    finally:
        _current.reset(token)
