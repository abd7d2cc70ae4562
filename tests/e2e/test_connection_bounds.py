"""End to end: a ``tidings serve`` process keeps answering its health probe while more
idle connections are open than the usual default limit on open files."""

from __future__ import annotations

import contextlib
import resource
import socket
from pathlib import Path

import httpx

from tests.e2e.procs import Processes, Server, free_port, tidings_env

COMMON_LIMIT = 1024
"""The soft limit on open files many systems give a process by default."""
IDLE = 1100


async def test_health_answers_with_more_idle_connections_than_the_default_file_limit(
    processes: Processes, tmp_path: Path
) -> None:
    env = tidings_env(tmp_path / "data", port=free_port())
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert hard == resource.RLIM_INFINITY or hard > IDLE + 200, (
        f"this test needs a hard limit on open files above {IDLE + 200}, not {hard}"
    )
    # The server starts with the common default, as it would under a plain shell.
    resource.setrlimit(resource.RLIMIT_NOFILE, (COMMON_LIMIT, hard))
    try:
        process = processes.start("serve", ["serve"], env)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    server = Server(process, f"http://127.0.0.1:{env['TIDINGS_PORT']}")
    await server.wait_ready()

    with contextlib.ExitStack() as stack:
        for _ in range(IDLE):
            idle = stack.enter_context(
                socket.create_connection(("127.0.0.1", int(env["TIDINGS_PORT"])))
            )
            idle.setblocking(False)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10.0) as client:
            health = await client.get("/healthz")
        assert health.status_code == 200, health.text
    assert "Too many open files" not in process.output(), process.output()
