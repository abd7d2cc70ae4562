"""The processes: the HTTP server of ``tidings serve`` and ``tidings api``, with its
connection bounds, and the scale-out processes beside the API, ``tidings worker`` and
``tidings scheduler``.

Each of the latter builds the same runtime as ``tidings serve``, starts only its own part
of it, and answers ``/healthz`` and ``/readyz`` on a port of its own, so an orchestrator
can tell a process that runs from one that can work.

Every process reloads its catalog on SIGHUP; ``tidings serve`` also watches the folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import signal
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import uvicorn
from fastapi import FastAPI

from tidings import __version__
from tidings.app import Runtime, add_health_routes, build_runtime
from tidings.catalog.reload import CatalogReloader
from tidings.kit import bounds
from tidings.kit.jetstream import JetStreamQueue
from tidings.kit.settings import Settings

log = logging.getLogger(__name__)

WORKER_HEALTH_PORT = 8001
SCHEDULER_HEALTH_PORT = 8002
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
        loop="uvloop" if sys.platform != "win32" else "asyncio",
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
) -> None:
    """Serve ``application`` over HTTP (on ``listening`` when given, see ``listen``) until
    SIGTERM/SIGINT, within the bounds of ``settings``; reload the catalog on SIGHUP, and
    with ``watch_catalog`` whenever its folder changes."""
    bounds.raise_open_files_limit(settings.max_connections + SPARE_FILES)
    server = uvicorn.Server(http_config(application, settings))
    runtime: Runtime = application.state.runtime
    sockets = None if listening is None else [listening]
    with asyncio.Runner(loop_factory=server.config.get_loop_factory()) as runner:
        runner.run(_serve_reloading(server, sockets, runtime.reloader, watch_catalog))


async def _serve_reloading(
    server: uvicorn.Server,
    sockets: list[socket.socket] | None,
    reloader: CatalogReloader,
    watch: bool,
) -> None:
    async with catalog_reloads(reloader, watch=watch):
        await server.serve(sockets)


@contextlib.asynccontextmanager
async def catalog_reloads(reloader: CatalogReloader, *, watch: bool) -> AsyncIterator[None]:
    """Reload the catalog on SIGHUP while the block runs, and with ``watch`` whenever a
    file of its folder changes."""
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, reloader.request)
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


async def run_worker(settings: Settings) -> None:
    """Lease jobs of the configured stages and lanes and run them, until SIGTERM/SIGINT."""
    runtime = build_runtime(settings)
    await runtime.start(consume=True)
    log.info(
        "worker %s running stages %s, lanes %s",
        runtime.worker.worker_id,
        ",".join(settings.stages),
        ",".join(map(str, settings.lanes)),
    )
    await _run_until_stopped(runtime, settings.health_port, WORKER_HEALTH_PORT)


async def run_scheduler(settings: Settings) -> None:
    """Relay due timers (and any job a crashed process committed but did not relay) to
    JetStream, until SIGTERM/SIGINT. Several may run: each due row goes out once.

    Raises:
        ValueError: the queue is the database's own, whose workers fire timers themselves.
    """
    runtime = build_runtime(settings)
    if not isinstance(runtime.queue, JetStreamQueue):
        await runtime.close()
        raise ValueError(
            "the database queue's workers fire timers themselves; "
            "the scheduler runs with TIDINGS_QUEUE_BACKEND=jetstream"
        )
    await runtime.start(consume=False, relay_poll=settings.scheduler_poll_seconds)
    log.info("scheduler relaying due jobs every %.1fs", settings.scheduler_poll_seconds)
    await _run_until_stopped(runtime, settings.health_port, SCHEDULER_HEALTH_PORT)


async def _run_until_stopped(runtime: Runtime, chosen_port: int | None, default: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with (
            serve_health(runtime, chosen_port, default),
            catalog_reloads(runtime.reloader, watch=False),
        ):
            await stop.wait()
    finally:
        # Running batches get their time to finish; unacknowledged messages return to
        # their partitions for the next owner.
        await runtime.close()


@contextlib.asynccontextmanager
async def serve_health(
    runtime: Runtime, chosen_port: int | None, default: int
) -> AsyncIterator[int | None]:
    """Answer ``/healthz`` and ``/readyz`` for this process while the block runs; yields
    the port (``--health-port 0`` takes any free one), or None when the default port was
    taken by another process on the host.

    Raises:
        OSError: the port was chosen (``--health-port``) and is taken, or the host
            cannot be listened on at all (not an address of this machine, say).
    """
    port = default if chosen_port is None else chosen_port
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
