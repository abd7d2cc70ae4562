"""The scale-out processes beside the API, ``tidings worker`` and ``tidings scheduler``:
each builds the same runtime as ``tidings serve``, starts only its own part of it, and
runs until it is asked to stop."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket

from tidings.app.runtime import Runtime
from tidings.app.wiring import build_runtime
from tidings.kit import loops
from tidings.kit.settings import Settings
from tidings.processes.health import serve_health
from tidings.processes.reloads import catalog_reloads

log = logging.getLogger("tidings.processes")

WORKER_HEALTH_PORT = 8001
SCHEDULER_HEALTH_PORT = 8002


async def run_worker(
    settings: Settings,
    *,
    health: socket.socket | None = None,
    lifeline: int | None = None,
    watch_catalog: bool = False,
) -> None:
    """Lease jobs of the configured stages and lanes and run them, until SIGTERM/SIGINT,
    or until the ``lifeline`` descriptor closes (the ``serve`` that started this worker is
    gone). ``health`` is a listening socket for ``/healthz`` and ``/readyz`` instead of
    the health port; with ``watch_catalog`` the catalog reloads when its folder changes."""
    # Asked to stop while still starting, it stops as soon as it has started.
    stop = _stop_on_signals()
    runtime = build_runtime(settings)
    await runtime.start(consume=True)
    log.info(
        "worker %s running stages %s, lanes %s, on %s",
        runtime.worker.worker_id,
        ",".join(settings.stages),
        ",".join(map(str, settings.lanes)),
        loops.name(),
    )
    await _run_until_stopped(
        runtime,
        settings.health_port,
        WORKER_HEALTH_PORT,
        listening=health,
        lifeline=lifeline,
        watch_catalog=watch_catalog,
        stop=stop,
    )


async def run_scheduler(settings: Settings) -> None:
    """Relay due timers (and any job a crashed process committed but did not relay) to
    JetStream, until SIGTERM/SIGINT. Several may run: each due row goes out once.

    Raises:
        ValueError: the queue is the database's own, whose workers fire timers themselves.
    """
    runtime = build_runtime(settings)
    if not runtime.queue.relayed:
        await runtime.close()
        raise ValueError(
            "the database queue's workers fire timers themselves; "
            "the scheduler runs with TIDINGS_QUEUE_BACKEND=jetstream"
        )
    await runtime.start(consume=False, relay_poll=settings.scheduler_poll_seconds)
    log.info("scheduler relaying due jobs every %.1fs", settings.scheduler_poll_seconds)
    await _run_until_stopped(runtime, settings.health_port, SCHEDULER_HEALTH_PORT)


async def _run_until_stopped(
    runtime: Runtime,
    chosen_port: int | None,
    default: int,
    *,
    listening: socket.socket | None = None,
    lifeline: int | None = None,
    watch_catalog: bool = False,
    stop: asyncio.Event | None = None,
) -> None:
    stop = stop or _stop_on_signals()
    loop = asyncio.get_running_loop()
    if lifeline is not None:
        loop.add_reader(lifeline, _lifeline_closed, lifeline, stop)
    try:
        async with (
            serve_health(runtime, chosen_port, default, listening=listening),
            catalog_reloads(runtime.reloader, watch=watch_catalog),
        ):
            await stop.wait()
    finally:
        if lifeline is not None:
            loop.remove_reader(lifeline)
        # Running batches get their time to finish; unacknowledged messages return to
        # their partitions for the next owner.
        await runtime.close()


def _stop_on_signals() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM, from now on."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


def _lifeline_closed(lifeline: int, stop: asyncio.Event) -> None:
    """The lifeline is readable: nothing is ever written to it, so the other end closed."""
    try:
        data = os.read(lifeline, 1)
    except OSError:
        data = b""
    if not data:
        log.warning("the serve process that started this worker is gone; stopping")
        asyncio.get_running_loop().remove_reader(lifeline)
        stop.set()
