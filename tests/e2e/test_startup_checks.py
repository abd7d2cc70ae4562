"""End to end: a process that cannot work says so before it starts, in one line that
says what to do, and exits non-zero; it never says "Listening" first.

- a PostgreSQL schema behind this version (never migrated here) names ``tidings db
  upgrade``, unless TIDINGS_MIGRATE_ON_START (or ``--migrate``) asks to migrate;
- a taken port names TIDINGS_PORT and ``--port``;
- ``tidings doctor`` fails an HTTP public URL and a PostgreSQL without TIDINGS_SECRET.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import create_pg_database, drop_pg_database, pg_url
from tests.e2e.procs import Processes, free_port, run_cli, tidings_env

SECRET = "startup-secret-" + "x" * 32


@pytest.fixture
async def empty_database() -> AsyncIterator[str]:
    """A fresh PostgreSQL database that no one migrated."""
    name = await create_pg_database()
    try:
        yield pg_url(name)
    finally:
        await drop_pg_database(name)


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.parametrize(
    "command", [["serve"], ["api"], ["worker", "--health-port", "0"]], ids=lambda c: c[0]
)
async def test_a_process_refuses_a_database_that_was_never_migrated(
    empty_database: str, tmp_path: Path, command: list[str]
) -> None:
    env = tidings_env(
        tmp_path / "data", port=free_port(), database_url=empty_database, secret=SECRET
    )
    done = await asyncio.to_thread(run_cli, command, env, check=False)

    assert done.returncode == 1, done
    assert "Listening" not in done.stdout
    assert "Traceback" not in done.stderr
    line = one_error_line(done.stderr)
    assert line.startswith("error: the database has no schema yet"), line
    assert "'tidings db upgrade'" in line
    assert "TIDINGS_MIGRATE_ON_START=true" in line


async def test_migrate_on_start_brings_the_schema_up_and_the_process_is_ready(
    empty_database: str, tmp_path: Path, processes: Processes
) -> None:
    env = tidings_env(
        tmp_path / "data",
        port=free_port(),
        database_url=empty_database,
        secret=SECRET,
        migrate_on_start=True,
    )
    server = await processes.serve("serve", env)
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        ready = await client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["schema"] == "ok"
    assert "database migrated from (empty) to revision" in server.process.output()


async def test_a_taken_port_is_refused_before_listening(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = tidings_env(tmp_path / "data", port=port)
        # Migrated already: the first start's migration lines are not what is tested.
        await asyncio.to_thread(run_cli, ["db", "upgrade"], env)
        done = await asyncio.to_thread(run_cli, ["serve"], env, check=False)

    assert done.returncode == 1, done
    assert "Listening" not in done.stdout
    assert "Traceback" not in done.stderr
    line = one_error_line(done.stderr)
    assert line.startswith(f"error: port {port} on 127.0.0.1 is already in use"), line
    assert "TIDINGS_PORT" in line
    assert "--port" in line


async def test_doctor_fails_an_http_public_url_and_postgresql_without_a_shared_secret(
    empty_database: str, tmp_path: Path
) -> None:
    env = tidings_env(
        tmp_path / "data",
        database_url=empty_database,
        public_url="http://tidings.example.com",
    )
    done = await asyncio.to_thread(run_cli, ["doctor"], env, check=False)

    assert done.returncode == 1, done
    out = done.stdout
    assert "FAIL secret: TIDINGS_SECRET is not set" in out
    assert "set the same TIDINGS_SECRET (at least 32 characters) in every process" in out
    assert "FAIL public url: TIDINGS_PUBLIC_URL is http://tidings.example.com" in out
    assert "RFC 8058" in out
    assert "to fix: set TIDINGS_PUBLIC_URL to the https:// address" in out
    assert "FAIL schema" in out
    assert "run 'tidings db upgrade'" in out
    assert "3 check(s) failed: secret, public url, schema" in done.stderr

    short = {**env, "TIDINGS_SECRET": "s" * 31}
    refused = await asyncio.to_thread(run_cli, ["doctor"], short, check=False)
    assert refused.returncode == 1
    assert "TIDINGS_SECRET is 31 characters long; it must have at least 32" in refused.stderr

    https = {**env, "TIDINGS_SECRET": SECRET, "TIDINGS_PUBLIC_URL": "https://tidings.example.com"}
    await asyncio.to_thread(run_cli, ["db", "upgrade"], https)
    healthy = await asyncio.to_thread(run_cli, ["doctor"], https, check=False)
    assert "FAIL" not in healthy.stdout, healthy.stdout
    assert healthy.returncode == 0, healthy
