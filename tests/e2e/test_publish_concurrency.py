"""End to end: batches published at the same time that name the same recipients."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import create_pg_database, drop_pg_database, pg_url
from tests.e2e.procs import Processes, create_key, free_port, run_cli, tidings_env

USERS = [f"u-{n:04d}" for n in range(500)]
ROUNDS = 10
DATA = {"id": "c-1", "text": "@all"}


def batch(tag: str, users: list[str]) -> dict[str, Any]:
    """Ten mentions, fifty of ``users`` each, in the order given, each with an address."""
    return {
        "events": [
            {
                "type": "mention.created",
                "idempotency_key": f"{tag}-{n}",
                "actor": {"id": "u-ann", "name": "Ann"},
                "recipients": [
                    {"id": user, "email": f"{user}@example.com"}
                    for user in users[n * 50 : (n + 1) * 50]
                ],
                "data": {
                    "board": {"id": "b-1", "name": "Roadmap"},
                    "comment": {"id": "c", "text": "t"},
                },
            }
            for n in range(len(users) // 50)
        ]
    }


@pytest.mark.postgres
async def test_concurrent_batches_naming_the_same_users_are_all_accepted(
    processes: Processes, tmp_path: Path
) -> None:
    name = await create_pg_database()
    try:
        env = tidings_env(
            tmp_path / "data", port=free_port(), database_url=pg_url(name), worker_enabled=False
        )
        await asyncio.to_thread(run_cli, ["db", "upgrade"], env)
        api = await processes.serve("api", env)
        key = await create_key(env)
        headers = {"Authorization": f"Bearer {key}"}
        # One connection per producer: the server closes a connection after a 500.
        async with (
            httpx.AsyncClient(base_url=api.base_url, headers=headers, timeout=60) as one,
            httpx.AsyncClient(base_url=api.base_url, headers=headers, timeout=60) as other,
        ):
            for round_ in range(ROUNDS):
                answers = await asyncio.gather(
                    one.post("/v1/events/batch", json=batch(f"a{round_}", USERS)),
                    other.post("/v1/events/batch", json=batch(f"b{round_}", USERS[::-1])),
                )
                assert [a.status_code for a in answers] == [202, 202], (
                    f"round {round_}: {[a.text for a in answers]}"
                )
        await api.process.terminate()
    finally:
        await drop_pg_database(name)
