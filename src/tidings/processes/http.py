"""The HTTP server of ``tidings serve`` and ``tidings api``, with its connection bounds,
and ``serve --workers``: the API in this process, its workers beside it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn

from tidings import supervisor
from tidings.app.runtime import Runtime
from tidings.catalog.reload import CatalogReloader
from tidings.kit import bounds, loops
from tidings.kit.settings import Settings
from tidings.processes.reloads import catalog_reloads

log = logging.getLogger("tidings.processes")

STOP_SECONDS = 10.0
"""The least time ``serve`` gives its workers to stop before it kills them (the lease of
a job, if longer: what a running batch may take)."""
SPARE_FILES = 256
"""Open files a process needs besides its client connections: database pools, brokers,
logs."""


def http_config(application: Any, settings: Settings) -> uvicorn.Config:
    """The uvicorn configuration of an HTTP process, with its connection bounds: the
    request head and body timeouts, the keep-alive timeout and the connection cap."""
    return uvicorn.Config(
        bounds.bounded(application, body_timeout=settings.body_timeout_seconds),
        host=settings.host,
        port=settings.port,
        loop=loops.UVICORN_LOOP,
        http=bounds.protocol(
            header_timeout=settings.header_timeout_seconds,
            max_connections=settings.max_connections,
        ),
        timeout_keep_alive=settings.keepalive_timeout_seconds,
        log_level="warning",
        log_config=None,  # uvicorn's lines go through Tidings' own log set-up
        access_log=False,
    )


def serve_http(
    application: Any,
    settings: Settings,
    listening: socket.socket | None = None,
    *,
    watch_catalog: bool = False,
    workers: int = 0,
) -> int:
    """Serve ``application`` over HTTP (on ``listening`` when given, see
    ``ports.listen``) until SIGTERM/SIGINT, within the bounds of ``settings``; reload the
    catalog on SIGHUP, and with ``watch_catalog`` whenever its folder changes. With
    ``workers``, that many worker processes run beside it (``serve_with_workers``).
    Returns the exit code."""
    bounds.raise_open_files_limit(settings.max_connections + SPARE_FILES)
    runtime: Runtime = application.state.runtime
    sockets = None if listening is None else [listening]
    if workers:
        server: uvicorn.Server = QuietServer(http_config(application, settings))
        return loops.run(serve_with_workers(server, sockets, runtime, workers, watch_catalog))
    server = uvicorn.Server(http_config(application, settings))
    loops.run(_serve_reloading(server, sockets, runtime.reloader, watch_catalog))
    return 0


async def serve_with_workers(
    server: uvicorn.Server,
    sockets: list[socket.socket] | None,
    runtime: Runtime,
    count: int,
    watch: bool,
) -> int:
    """Serve HTTP in this process with ``count`` worker processes beside it, until
    SIGTERM/SIGINT (passed on to the workers) or until a worker exits unasked, which
    stops everything. ``/readyz`` is ready only when every worker's is too. Returns the
    exit code: 0 after a stop that was asked for and that every worker made cleanly, 1
    when a worker ended unasked or had to be killed."""
    loop = asyncio.get_running_loop()
    workers = supervisor.Workers(
        count, stop_seconds=max(STOP_SECONDS, runtime.settings.worker_lease_seconds)
    )
    asked: list[int] = []

    def stop(sig: int) -> None:
        if asked:
            # A second Ctrl-C: no more waiting for open connections.
            server.force_exit = True
        asked.append(sig)
        server.should_exit = True
        # SIGTERM whichever came: a worker stops the same on both, and one still starting
        # (before its handlers are in place) ends quietly instead of with a traceback.
        workers.send(signal.SIGTERM)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop, sig)
    failed = False
    exits: asyncio.Task[supervisor.WorkerProcess] | None = None
    try:
        workers.start()
        runtime.companions["workers"] = workers.readiness
        async with catalog_reloads(
            runtime.reloader, watch=watch, also=lambda: workers.send(signal.SIGHUP)
        ):
            serving = asyncio.create_task(server.serve(sockets), name="tidings-http")
            exits = asyncio.create_task(workers.exited(), name="tidings-workers")
            await asyncio.wait({serving, exits}, return_when=asyncio.FIRST_COMPLETED)
            if exits.done() and not asked:
                ended = exits.result()
                log.error(
                    "%s ended with %s; stopping serve and the other workers",
                    ended.name,
                    ended.exit_status(),
                )
                failed = True
                server.should_exit = True
            await serving
            if not server.started and not asked:
                failed = True  # the API did not start (its lifespan failed): logged by uvicorn
    finally:
        if exits is not None:
            exits.cancel()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        clean = await workers.stop()
    return 1 if failed or not clean else 0


async def _serve_reloading(
    server: uvicorn.Server,
    sockets: list[socket.socket] | None,
    reloader: CatalogReloader,
    watch: bool,
) -> None:
    async with catalog_reloads(reloader, watch=watch):
        await server.serve(sockets)


class QuietServer(uvicorn.Server):
    """A uvicorn server that leaves the process's signals to the process."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield
