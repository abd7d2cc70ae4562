"""The health port of the processes without an API, ``tidings worker`` and ``tidings
scheduler``: ``/healthz`` and ``/readyz`` on a port of their own."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator

import uvicorn
from fastapi import FastAPI

from tidings import __version__
from tidings.app.health import add_health_routes
from tidings.app.runtime import Runtime
from tidings.kit import bounds
from tidings.processes.http import QuietServer
from tidings.processes.ports import bind

log = logging.getLogger("tidings.processes")


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
        listening = bind(runtime.settings.host, port)
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
    return QuietServer(config)
