"""The health port of ``tidings worker`` and ``tidings scheduler``: several processes
starting at once on one host must not stop each other over the default port."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tidings.app.wiring import build_runtime
from tidings.kit.settings import Settings
from tidings.processes.health import serve_health


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_processes_starting_together_share_the_default_port(
    make_settings: Callable[..., Settings],
) -> None:
    default = _free_port()
    runtimes = [build_runtime(make_settings(host="127.0.0.1")) for _ in range(3)]
    try:
        async with contextlib.AsyncExitStack() as stack:
            ports = await asyncio.gather(
                *(stack.enter_async_context(serve_health(r, None, default)) for r in runtimes)
            )
            # Exactly one of them answers on the default port; the others run without.
            assert sorted(ports, key=lambda p: p or 0) == [None, None, default]
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{default}") as client:
                assert (await client.get("/healthz")).json()["status"] == "ok"
                ready = await client.get("/readyz")
                assert ready.status_code == 200
                assert ready.json()["checks"]["database"] == "ok"
        # Closed with the block: the port is free again for the next process.
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", default))
    finally:
        for runtime in runtimes:
            await runtime.close()


async def test_a_chosen_port_that_is_taken_stops_the_process(
    make_settings: Callable[..., Settings],
) -> None:
    runtime = build_runtime(make_settings(host="127.0.0.1"))
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port: Any = taken.getsockname()[1]
    try:
        with pytest.raises(OSError, match=f"health port {port}"):
            async with serve_health(runtime, port, 8001):
                pass
    finally:
        taken.close()
        await runtime.close()


async def test_port_zero_takes_a_free_port_and_ipv6_hosts_work(
    make_settings: Callable[..., Settings],
) -> None:
    if not socket.has_ipv6:
        pytest.fail("this machine's Python has no IPv6")
    runtime = build_runtime(make_settings(host="::1"))
    try:
        async with serve_health(runtime, 0, 8001) as port:
            assert port not in (None, 0, 8001)
            async with httpx.AsyncClient(base_url=f"http://[::1]:{port}") as client:
                assert (await client.get("/healthz")).json()["status"] == "ok"
    finally:
        await runtime.close()


async def test_a_host_that_is_not_this_machines_is_a_clear_error(
    make_settings: Callable[..., Settings],
) -> None:
    """Not "the port is taken": the address itself cannot be listened on."""
    runtime = build_runtime(make_settings(host="192.0.2.1"))
    try:
        with pytest.raises(OSError, match=r"cannot listen on 192\.0\.2\.1 port") as failed:
            async with serve_health(runtime, None, _free_port()):
                pass
        assert "already in use" not in str(failed.value)
    finally:
        await runtime.close()


async def test_an_empty_host_listens_on_every_interface(
    make_settings: Callable[..., Settings],
) -> None:
    runtime = build_runtime(make_settings(host=""))
    try:
        async with (
            serve_health(runtime, 0, 8001) as port,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client,
        ):
            assert (await client.get("/healthz")).json()["status"] == "ok"
    finally:
        await runtime.close()
