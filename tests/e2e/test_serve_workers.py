"""End to end: ``tidings serve --workers N`` on PostgreSQL, the API in one process and N
worker processes beside it, started, watched and stopped as one command; and the event
loop each process runs on."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import CANONICAL_EVENT, create_pg_database, drop_pg_database, pg_url
from tests.e2e.procs import (
    Process,
    Processes,
    Server,
    create_key,
    free_port,
    run_cli,
    tidings_env,
    user_token,
)
from tests.e2e.test_scale_out import wait_ready
from tests.e2e.test_serve_sse import open_stream

pytestmark = pytest.mark.postgres

GONE_TIMEOUT = 30.0


@contextlib.asynccontextmanager
async def postgres_env(tmp_path: Path, **settings: str | int) -> AsyncIterator[dict[str, str]]:
    """The environment of a deployment on a fresh, migrated PostgreSQL database, whose
    live updates go through Redis under a prefix of its own."""
    name = await create_pg_database()
    try:
        env = tidings_env(
            tmp_path / "data",
            **{
                "port": free_port(),
                "database_url": pg_url(name),
                "secret": "s-" + uuid.uuid4().hex + uuid.uuid4().hex,
                "live_backend": "redis",
                "redis_prefix": f"t{uuid.uuid4().hex[:12]}",
                **settings,
            },
        )
        await asyncio.to_thread(run_cli, ["db", "upgrade"], env)
        yield env
    finally:
        await drop_pg_database(name)


async def start_serve(processes: Processes, env: dict[str, str], workers: int) -> Server:
    """``tidings serve --workers N``, once its ``/readyz`` answers 200."""
    process = processes.start("serve", ["serve", "--workers", str(workers)], env)
    await wait_ready(process, int(env["TIDINGS_PORT"]))
    return Server(process, f"http://127.0.0.1:{env['TIDINGS_PORT']}")


def worker_pids(serve: Process) -> list[int]:
    """The worker processes serve says it started."""
    found = re.search(r"started \d+ worker processes: pids ([\d,]+)", serve.output())
    assert found, serve.output()
    return [int(pid) for pid in found.group(1).split(",")]


def alive(pid: int) -> bool:
    """Whether ``pid`` is a process that has not been reaped, and not a zombie either."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


async def wait_gone(pids: list[int], timeout: float = GONE_TIMEOUT) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while any(alive(pid) for pid in pids):
        if loop.time() > deadline:
            pytest.fail(f"still running after {timeout}s: {[p for p in pids if alive(p)]}")
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("live", ["redis", "local"])
async def test_serve_with_workers_delivers_to_the_inbox_and_the_stream_then_stops_on_sigint(
    processes: Processes, tmp_path: Path, live: str
) -> None:
    # With the default ``local``, serve carries live updates over PostgreSQL itself.
    async with postgres_env(tmp_path, live_backend=live) as env:
        server = await start_serve(processes, env, workers=2)
        pids = worker_pids(server.process)
        assert len(pids) == 2
        key = await create_key(env)
        token = await user_token(env, "u-bob")
        producer = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30.0) as client:
            health = (await client.get("/healthz")).json()
            assert health["loop"] == "uvloop", health
            ready = await client.get("/readyz")
            assert ready.status_code == 200, ready.text
            assert ready.json()["checks"]["workers"] == "ok"

            async with open_stream(client, token, "bob") as bob:
                published = await client.post("/v1/events", json=CANONICAL_EVENT, headers=producer)
                assert published.status_code == 202, published.text
                event_id = published.json()["event_id"]
                # The API process runs no worker: a worker process planned this, and the
                # item it wrote reached the stream that the API process holds.
                item = (await bob.next_of("item")).json()
                assert item["event_id"] == event_id
                assert item["title"] == "Ann commented on Roadmap"
                assert (await bob.next_of("counts")).json()["unread"] == 1

            inbox = await client.get("/v1/me/inbox", headers={"Authorization": f"Bearer {token}"})
            assert [i["event_id"] for i in inbox.json()["items"]] == [event_id]

        # Ctrl-C reaches serve only (the workers have sessions of their own): serve
        # passes it on, every worker stops cleanly and is reaped, and serve exits 0.
        server.process.popen.send_signal(signal.SIGINT)
        assert await server.process.wait() == 0, server.process.output()
        await wait_gone(pids)
        output = server.process.output()
        assert "Traceback" not in output, output
        assert output.count("on uvloop") == 2, output


async def test_readiness_waits_for_every_worker(processes: Processes, tmp_path: Path) -> None:
    async with postgres_env(tmp_path) as env:
        server = await start_serve(processes, env, workers=2)
        frozen, _ = worker_pids(server.process)
        os.kill(frozen, signal.SIGSTOP)
        try:
            async with httpx.AsyncClient(base_url=server.base_url, timeout=30.0) as client:
                ready = await client.get("/readyz")
                assert ready.status_code == 503, ready.text
                assert ready.json()["checks"]["database"] == "ok"
                assert f"pid {frozen}" in ready.json()["checks"]["workers"], ready.text
                # The API process itself still answers: it is alive, only not ready.
                assert (await client.get("/healthz")).status_code == 200
        finally:
            os.kill(frozen, signal.SIGCONT)
        await wait_ready(server.process, int(env["TIDINGS_PORT"]))
        assert await server.process.terminate() == 0, server.process.output()


async def test_a_worker_that_dies_stops_serve_with_an_error(
    processes: Processes, tmp_path: Path
) -> None:
    async with postgres_env(tmp_path) as env:
        server = await start_serve(processes, env, workers=2)
        killed, other = worker_pids(server.process)
        os.kill(killed, signal.SIGKILL)
        # Not restarted: serve stops the API and the other worker, and says why.
        assert await server.process.wait(GONE_TIMEOUT) == 1, server.process.output()
        await wait_gone([other])
        output = server.process.output()
        assert f"worker 1 (pid {killed}) ended with signal SIGKILL" in output, output
        with pytest.raises(httpx.TransportError):
            async with httpx.AsyncClient(base_url=server.base_url) as client:
                await client.get("/healthz")


async def test_workers_stop_when_serve_is_killed(processes: Processes, tmp_path: Path) -> None:
    async with postgres_env(tmp_path) as env:
        server = await start_serve(processes, env, workers=1)
        pids = worker_pids(server.process)
        await server.process.kill()
        # Nothing passed a signal on: the worker saw its lifeline close.
        await wait_gone(pids)


async def test_workers_need_postgresql(tmp_path: Path) -> None:
    sqlite = tidings_env(tmp_path / "data", port=free_port())
    refused = await asyncio.to_thread(run_cli, ["serve", "--workers", "2"], sqlite, check=False)
    assert refused.returncode == 1, refused
    assert "--workers needs PostgreSQL" in refused.stderr, refused
    async with postgres_env(tmp_path, live_backend="local") as env:
        env["TIDINGS_SERVE_WORKERS"] = "many"
        refused = await asyncio.to_thread(run_cli, ["serve"], env, check=False)
        assert refused.returncode == 1, refused
        assert "TIDINGS_SERVE_WORKERS: 'many'" in refused.stderr, refused


async def test_a_worker_runs_on_uvloop(processes: Processes, tmp_path: Path) -> None:
    env = tidings_env(tmp_path / "data")
    port = free_port()
    worker = processes.start("worker", ["worker", "--health-port", str(port)], env)
    await wait_ready(worker, port)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        assert (await client.get("/healthz")).json()["loop"] == "uvloop"
    assert await worker.terminate() == 0, worker.output()
    assert re.search(r"worker \S+ running stages .* on uvloop", worker.output()), worker.output()


async def test_ctrl_c_while_the_workers_start_stops_cleanly(
    processes: Processes, tmp_path: Path
) -> None:
    async with postgres_env(tmp_path) as env:
        process = processes.start("serve", ["serve", "--workers", "2"], env)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + GONE_TIMEOUT
        while "started 2 worker processes" not in process.output():
            assert process.running(), process.output()
            assert loop.time() < deadline, process.output()
            await asyncio.sleep(0.01)
        # The workers are most likely still importing: asked to stop then, they stop
        # all the same, and serve counts that as the clean stop it asked for.
        process.popen.send_signal(signal.SIGINT)
        assert await process.wait(GONE_TIMEOUT) == 0, process.output()
        await wait_gone(worker_pids(process))
        assert "Traceback" not in process.output(), process.output()
