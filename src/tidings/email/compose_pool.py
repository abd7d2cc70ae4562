"""Builds and signs messages in worker processes, so the event loop only does I/O.

Building the MIME source and signing it (RSA) is most of an email's CPU, and the RSA
signature holds the GIL: a thread would not help, another process does. ``ComposePool``
hands ``Draft`` s (rendered, plain data) to a bounded ``ProcessPoolExecutor`` in chunks
and gets the signed ``OutgoingEmail`` s back.

The processes start on first use (``spawn``: nothing of the parent's threads or
connections is inherited), stop with ``close`` or once idle for ``idle_seconds``, and
stop by themselves if their parent dies. Until they have answered once (starting takes
a moment: imports), and for a chunk whose process died, messages are built in the
event loop instead; the pool starts again on the next use. With ``processes=0``
everything is built in the loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

from tidings.email.composer import Draft, MessageBuilder
from tidings.email.message import OutgoingEmail

log = logging.getLogger(__name__)

IDLE_SECONDS = 60.0
"""How long the processes stay up with nothing to build."""

MAX_PROCESSES = 64


def default_processes() -> int:
    """One process per two cores, one at least and four at most: the event loop, the
    database and the SMTP server want the other cores."""
    return max(1, min(4, (os.cpu_count() or 1) // 2))


@dataclass(frozen=True)
class BuildFailed:
    """A draft no message can be made of (its address cannot go in a header, say)."""

    delivery_id: str
    error: str


Built = OutgoingEmail | BuildFailed


class ComposePool:
    """Up to ``processes`` worker processes building messages with ``builder``."""

    def __init__(
        self,
        builder: MessageBuilder,
        processes: int | None = None,
        *,
        idle_seconds: float = IDLE_SECONDS,
    ) -> None:
        """``processes`` None: ``default_processes()``; 0: build in the event loop."""
        if processes is None:
            processes = default_processes()
        if not 0 <= processes <= MAX_PROCESSES:
            raise ValueError(f"processes must be between 0 and {MAX_PROCESSES}")
        self.builder = builder
        self.processes = processes
        self._idle_seconds = idle_seconds
        self._executor: concurrent.futures.ProcessPoolExecutor | None = None
        self._busy = 0
        self._ready = False
        self._warming: asyncio.Future[list[Built]] | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        self.started = 0
        """How many times the processes were started."""
        self.chunks_built = 0
        """How many chunks the processes built (not the event loop)."""

    @property
    def running(self) -> bool:
        """Whether the worker processes are up (or starting)."""
        return self._executor is not None

    @property
    def ready(self) -> bool:
        """Whether the worker processes are up and have answered: chunks go to them."""
        return self._ready

    async def start(self) -> None:
        """Start the worker processes now and wait until they answer (the first
        ``build`` does it too, without waiting: it builds in the loop meanwhile).

        Raises:
            RuntimeError: the processes died as they started.
        """
        if self.processes == 0 or self._ready:
            return
        executor = self._start()
        if self._warming is None:
            self._warm(asyncio.get_running_loop(), executor)
        assert self._warming is not None
        await asyncio.wait([self._warming])
        if not self._ready:
            raise RuntimeError("the email composing processes did not start")

    def pids(self) -> list[int]:
        """The worker processes' ids (none before the first use or after ``close``)."""
        executor = self._executor
        if executor is None:
            return []
        return list(getattr(executor, "_processes", None) or {})

    def build_here(self, drafts: Sequence[Draft]) -> list[Built]:
        """Build ``drafts`` in this thread."""
        return build_all(self.builder, drafts)

    async def build(self, drafts: Sequence[Draft]) -> list[Built]:
        """Build ``drafts`` in a worker process (in this loop when the pool has none),
        one result per draft, in order."""
        if self.processes == 0 or not drafts:
            return self.build_here(drafts)
        loop = asyncio.get_running_loop()
        executor = self._start()
        if not self._ready:
            # The processes are still starting: build here meanwhile.
            if self._warming is None:
                self._warm(loop, executor)
            self._arm_idle_timer(loop)
            return self.build_here(drafts)
        self._busy += 1
        try:
            built = await loop.run_in_executor(executor, _build_in_worker, list(drafts))
            self.chunks_built += 1
            return built
        except BrokenProcessPool:
            # A process died (killed, out of memory): build here, start afresh next time.
            log.warning("an email composing process died; building %d here", len(drafts))
            self._discard(executor)
            return self.build_here(drafts)
        finally:
            self._busy -= 1
            self._arm_idle_timer(loop)

    async def close(self) -> None:
        """Stop the worker processes (waiting for those building to finish)."""
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        executor, self._executor = self._executor, None
        self._ready = False
        if executor is not None:
            await asyncio.get_running_loop().run_in_executor(None, executor.shutdown)

    def _start(self) -> concurrent.futures.ProcessPoolExecutor:
        if self._executor is None:
            self._executor = concurrent.futures.ProcessPoolExecutor(
                self.processes,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(self.builder, os.getpid()),
            )
            self.started += 1
        return self._executor

    def _warm(
        self, loop: asyncio.AbstractEventLoop, executor: concurrent.futures.ProcessPoolExecutor
    ) -> None:
        self._warming = loop.run_in_executor(executor, _build_in_worker, [])
        self._warming.add_done_callback(self._warmed)

    def _warmed(self, future: asyncio.Future[list[Built]]) -> None:
        self._warming = None
        if not future.cancelled() and future.exception() is None:
            self._ready = self._executor is not None
        elif self._executor is not None:
            self._discard(self._executor)

    def _discard(self, executor: concurrent.futures.ProcessPoolExecutor) -> None:
        if self._executor is executor:
            self._executor = None
            self._ready = False
        executor.shutdown(wait=False, cancel_futures=True)

    def _arm_idle_timer(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        self._idle_timer = loop.call_later(self._idle_seconds, self._stop_if_idle)

    def _stop_if_idle(self) -> None:
        self._idle_timer = None
        if self._busy == 0 and self._executor is not None:
            executor, self._executor = self._executor, None
            self._ready = False
            executor.shutdown(wait=False)


def build_all(builder: MessageBuilder, drafts: Sequence[Draft]) -> list[Built]:
    """Each draft built, or why it could not be."""
    built: list[Built] = []
    for draft in drafts:
        try:
            built.append(builder.build(draft))
        except ValueError as exc:
            built.append(BuildFailed(draft.delivery_id, str(exc)))
    return built


# In a worker process: the builder its initializer was given.
_BUILDER: list[MessageBuilder] = []


def _init_worker(builder: MessageBuilder, parent: int) -> None:
    # A Ctrl-C reaches the whole process group: the parent stops the pool.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _BUILDER.append(builder)
    threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()


def _exit_with(parent: int) -> None:
    """End this process once its parent is gone (killed, say): nothing else would."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


def _build_in_worker(drafts: list[Draft]) -> list[Built]:
    return build_all(_BUILDER[0], drafts)
