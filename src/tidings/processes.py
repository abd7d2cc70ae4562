"""The processes: the HTTP server of ``tidings serve`` and ``tidings api``, with its
connection bounds, and the scale-out processes beside the API, ``tidings worker`` and
``tidings scheduler``.

Each of the latter builds the same runtime as ``tidings serve``, starts only its own part
of it, and answers ``/healthz`` and ``/readyz`` on a port of its own, so an orchestrator
can tell a process that runs from one that can work. ``tidings serve --workers N`` is
the API in one process and N ``tidings worker`` processes beside it (``supervisor``).

Every process runs on uvloop where it is installed (``kit.loops``), reloads its catalog
on SIGHUP, and ``tidings serve`` (with its workers) also watches the folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import uvicorn
from fastapi import FastAPI

from tidings import __version__, supervisor
from tidings.app import Runtime, add_health_routes, build_runtime
from tidings.catalog.reload import CatalogReloader
from tidings.kit import bounds, loops
from tidings.kit.settings import Settings

log = logging.getLogger(__name__)

WORKER_HEALTH_PORT = 8001
SCHEDULER_HEALTH_PORT = 8002
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


class PortInUse(OSError):
    """The HTTP port is taken by another process."""


def listen(settings: Settings) -> socket.socket:
    """The HTTP port of ``settings``, listening already: taken here, before anything says
    "Listening", so that a busy port is a clear refusal and not a line after it.

    Raises:
        PortInUse: another process holds the port; the message names the settings.
        OSError: the host cannot be listened on (not an address of this machine, say).
    """
    try:
        listening = _bind(settings.host, settings.port)
    except socket.gaierror as exc:
        raise OSError(exc.errno, f"cannot listen on {settings.host!r}: {exc.strerror}") from exc
    if listening is None:
        raise PortInUse(
            errno.EADDRINUSE,
            f"port {settings.port} on {settings.host} is already in use: set TIDINGS_PORT "
            "(or --port) to a free port, or stop the process that holds it",
        )
    return listening


def serve_http(
    application: Any,
    settings: Settings,
    listening: socket.socket | None = None,
    *,
    watch_catalog: bool = False,
    workers: int = 0,
) -> int:
    """Serve ``application`` over HTTP (on ``listening`` when given, see ``listen``) until
    SIGTERM/SIGINT, within the bounds of ``settings``; reload the catalog on SIGHUP, and
    with ``watch_catalog`` whenever its folder changes. With ``workers``, that many
    worker processes run beside it (``serve_with_workers``). Returns the exit code."""
    bounds.raise_open_files_limit(settings.max_connections + SPARE_FILES)
    runtime: Runtime = application.state.runtime
    sockets = None if listening is None else [listening]
    if workers:
        server: uvicorn.Server = _QuietServer(http_config(application, settings))
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


@contextlib.asynccontextmanager
async def catalog_reloads(
    reloader: CatalogReloader, *, watch: bool, also: Callable[[], None] | None = None
) -> AsyncIterator[None]:
    """Reload the catalog on SIGHUP while the block runs (and call ``also``, which passes
    it on to the processes this one started), and with ``watch`` whenever a file of its
    folder changes."""
    loop = asyncio.get_running_loop()

    def hangup() -> None:
        reloader.request()
        if also is not None:
            also()

    loop.add_signal_handler(signal.SIGHUP, hangup)
    stop = asyncio.Event()
    watching = (
        asyncio.create_task(_watch(reloader, stop), name="tidings-catalog-watch") if watch else None
    )
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
        stop.set()
        if watching is not None:
            await watching


async def _watch(reloader: CatalogReloader, stop: asyncio.Event) -> None:
    try:
        await reloader.watch(stop)
    except Exception:
        # The process serves on; SIGHUP and the admin endpoint still reload.
        log.warning("watching %s stopped; send SIGHUP to reload", reloader.folder, exc_info=True)


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


@contextlib.asynccontextmanager
async def serve_health(
    runtime: Runtime,
    chosen_port: int | None,
    default: int,
    *,
    listening: socket.socket | None = None,
) -> AsyncIterator[int | None]:
    """Answer ``/healthz`` and ``/readyz`` for this process while the block runs; yields
    the port (``--health-port 0`` takes any free one), or None when the default port was
    taken by another process on the host. ``listening`` is a socket already listening
    (the one ``serve`` hands its workers) to answer on instead.

    Raises:
        OSError: the port was chosen (``--health-port``) and is taken, or the host
            cannot be listened on at all (not an address of this machine, say).
    """
    port = default if chosen_port is None else chosen_port
    if listening is None:
        listening = _bind(runtime.settings.host, port)
    if listening is None and chosen_port is not None:
        raise OSError(f"health port {port} on {runtime.settings.host} is already in use")
    if listening is None:
        # Several processes on one host: only a port that was asked for is worth failing on.
        log.warning("port %d is taken; no /healthz here (set --health-port)", port)
        yield None
        return
    port = int(listening.getsockname()[1])
    health = _health_server(runtime, port)
    serving = asyncio.create_task(health.serve(sockets=[listening]), name="tidings-health")
    try:
        # The socket already listens: a probe that comes early waits in its backlog.
        yield port
    finally:
        health.should_exit = True
        try:
            await serving
        except Exception:
            log.exception("the health server failed")
        finally:
            listening.close()


def _health_server(runtime: Runtime, port: int) -> uvicorn.Server:
    app = FastAPI(title="Tidings process health", version=__version__)
    add_health_routes(app, runtime)
    config = uvicorn.Config(
        app,
        host=runtime.settings.host,
        port=port,
        http=bounds.protocol(
            header_timeout=runtime.settings.header_timeout_seconds, max_connections=None
        ),
        timeout_keep_alive=runtime.settings.keepalive_timeout_seconds,
        log_level="warning",
        log_config=None,
        access_log=False,
    )
    return _QuietServer(config)


class _QuietServer(uvicorn.Server):
    """A uvicorn server that leaves the process's signals to the process."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _bind(host: str, port: int) -> socket.socket | None:
    """The health port, bound here rather than by uvicorn so that two processes starting
    at once cannot both find it free: the loser learns at once (None) and carries on
    without. ``host`` may be an IPv4 or IPv6 address or a name.

    Raises:
        OSError: the host cannot be listened on for another reason than a taken port.
    """
    family, kind, proto, _name, address = socket.getaddrinfo(
        host or None,  # "" means every interface, as it does to bind()
        port,
        type=socket.SOCK_STREAM,
        flags=socket.AI_PASSIVE,
    )[0]
    sock = socket.socket(family, kind, proto)
    # Listening at once, the port is refused to every later bind (SO_REUSEADDR only
    # forgets closed connections).
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            return None
        raise OSError(exc.errno, f"cannot listen on {host} port {port}: {exc.strerror}") from exc
    return sock
