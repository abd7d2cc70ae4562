"""The application served over real sockets by uvicorn, in the test's own event loop,
with the connection bounds ``tidings serve`` and ``tidings api`` run with."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator

import uvicorn
from fastapi import FastAPI

from tidings.app.asgi import create_app
from tidings.app.wiring import build_runtime
from tidings.kit.settings import Settings
from tidings.processes.http import http_config

START_TIMEOUT = 10.0


class _Server(uvicorn.Server):
    """Leaves the test process's signals alone."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def served(settings: Settings) -> AsyncIterator[tuple[FastAPI, str]]:
    """The application of ``settings``, started and listening on a free loopback port;
    yields it with its base URL."""
    application = create_app(runtime=build_runtime(settings))
    listening = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listening.bind(("127.0.0.1", 0))
    listening.listen(2048)
    port = listening.getsockname()[1]
    config = http_config(application, settings.model_copy(update={"port": port}))
    config.lifespan = "on"
    # A stream a test left open must not hold the teardown for ever.
    config.timeout_graceful_shutdown = 5
    server = _Server(config)
    serving = asyncio.create_task(server.serve(sockets=[listening]))
    try:
        deadline = asyncio.get_running_loop().time() + START_TIMEOUT
        while not server.started:
            if serving.done():
                serving.result()
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"the server did not start within {START_TIMEOUT}s")
            await asyncio.sleep(0.02)
        yield application, f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await serving
        listening.close()
