"""End to end on the scale-out engines: a three-node NATS cluster, PostgreSQL and Redis,
with two API processes, two workers and a scheduler, each a real ``tidings`` process.

The main test publishes a steady stream of events, SIGKILLs a NATS node and a worker in
the middle of it, and then proves that every event an API acknowledged produced exactly
one inbox item per recipient, with none missing and none twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import nats
import pytest

from tests.conftest import (
    PG_HOST,
    PG_PORT,
    PG_USER,
    create_pg_database,
    drop_pg_database,
    pg_url,
)
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
from tests.e2e.test_serve_sse import open_stream
from tests.nats_cluster import NatsCluster

READY_TIMEOUT = 60.0
SETTLE_TIMEOUT = 180.0
USERS = [f"u-{n:03d}" for n in range(200)]


@dataclass
class Deployment:
    """The processes of one scale-out deployment, and how to reach them."""

    env: dict[str, str]
    database: str
    apis: list[Server] = field(default_factory=list)
    workers: list[Process] = field(default_factory=list)
    health: dict[str, int] = field(default_factory=dict)


async def wait_ready(process: Process, port: int, timeout: float = READY_TIMEOUT) -> None:
    """Wait (bounded) until the process's ``/readyz`` answers 200."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last = "no answer"
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=2.0) as client:
        while loop.time() < deadline:
            if not process.running():
                pytest.fail(f"{process.name} exited before it was ready\n{process.output()}")
            with contextlib.suppress(httpx.TransportError):
                response = await client.get("/readyz")
                if response.status_code == 200:
                    return
                last = response.text
            await asyncio.sleep(0.1)
    pytest.fail(f"{process.name} not ready within {timeout}s: {last}\n{process.output()}")


@contextlib.asynccontextmanager
async def deployment(
    processes: Processes, tmp_path: Path, nats_urls: list[str], replicas: int
) -> AsyncIterator[Deployment]:
    """A fresh PostgreSQL database with the schema, then a scheduler, two workers and two
    APIs on it, all ready."""
    database = await create_pg_database()
    prefix = f"e2e{uuid.uuid4().hex[:8]}"
    env = tidings_env(
        tmp_path / "data",
        database_url=pg_url(database),
        queue_backend="jetstream",
        counters_backend="redis",
        live_backend="nats",
        nats_url=",".join(nats_urls),
        nats_prefix=prefix,
        redis_prefix=prefix,
        nats_replicas=replicas,
        nats_partitions=4,
        nats_ack_wait_seconds=3,
        job_backoff_base_seconds=0.2,
        job_backoff_max_seconds=1,
        secret="e2e-secret-" + "x" * 32,
    )
    try:
        await asyncio.to_thread(run_cli, ["db", "upgrade"], env)
        deployed = Deployment(env=env, database=database)
        scheduler_port = free_port()
        scheduler = processes.start(
            "scheduler", ["scheduler", "--health-port", str(scheduler_port)], env
        )
        await wait_ready(scheduler, scheduler_port)
        for n in range(2):
            port = free_port()
            worker = processes.start(f"worker-{n}", ["worker", "--health-port", str(port)], env)
            deployed.workers.append(worker)
            deployed.health[worker.name] = port
        for worker in deployed.workers:
            await wait_ready(worker, deployed.health[worker.name])
        for n in range(2):
            port = free_port()
            api_env = {**env, "TIDINGS_PORT": str(port)}
            api = Server(processes.start(f"api-{n}", ["api"], api_env), f"http://127.0.0.1:{port}")
            await api.wait_ready(READY_TIMEOUT)
            await wait_ready(api.process, port)
            deployed.apis.append(api)
        yield deployed
    finally:
        processes.close()
        await drop_pg_database(database)
        await delete_streams(nats_urls, prefix)


async def delete_streams(nats_urls: list[str], prefix: str) -> None:
    """Remove a deployment's streams from a NATS that outlives the test."""
    with contextlib.suppress(Exception):
        nc = await nats.connect(servers=nats_urls, connect_timeout=2, max_reconnect_attempts=1)
        js = nc.jetstream()
        for stage in ("plan", "deliver", "dead"):
            with contextlib.suppress(Exception):
                await js.delete_stream(f"{prefix}_{stage}".upper())
        await nc.close()


def comment(n: int, recipients: list[str]) -> dict[str, Any]:
    return {
        "type": "comment.created",
        "idempotency_key": f"scale-{n}",
        "actor": {"id": "u-ann", "name": "Ann"},
        "recipients": [{"id": user} for user in recipients],
        "data": {
            "board": {"id": "b-1", "name": "Roadmap"},
            "comment": {"id": f"c-{n}", "text": f"comment {n}"},
        },
    }


class Publisher:
    """Sends events through the APIs in turn and remembers what each acknowledged.

    A request that fails (an API restarting, a reset connection) is sent again with the
    same idempotency key, to the next API: an event counts as acknowledged once some
    API answered 202 for it, and must then be delivered exactly once.
    """

    def __init__(self, apis: list[Server], key: str) -> None:
        self._clients = [
            httpx.AsyncClient(
                base_url=api.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=10
            )
            for api in apis
        ]
        self._turn = itertools.cycle(range(len(apis)))
        self.acknowledged: dict[str, list[str]] = {}
        self.retries = 0

    async def send(self, n: int, recipients: list[str]) -> None:
        body = comment(n, recipients)
        for _attempt in range(20):
            client = self._clients[next(self._turn)]
            try:
                response = await client.post("/v1/events", json=body)
            except httpx.TransportError:
                self.retries += 1
                await asyncio.sleep(0.2)
                continue
            if response.status_code == 202:
                self.acknowledged[response.json()["event_id"]] = recipients
                return
            self.retries += 1
            await asyncio.sleep(0.2)
        pytest.fail(f"event {n} was never acknowledged")

    async def close(self) -> None:
        for client in self._clients:
            await client.aclose()


async def delivered(database: str) -> dict[tuple[str, str], int]:
    """(event id, user id) → how many inbox items exist for it."""
    conn = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, database=database)
    try:
        rows = await conn.fetch(
            "SELECT event_id, user_id, count(*) AS n FROM inbox_items GROUP BY event_id, user_id"
        )
    finally:
        await conn.close()
    return {(row["event_id"], row["user_id"]): row["n"] for row in rows}


async def wait_for_inbox(
    database: str, expected: Mapping[str, list[str]]
) -> dict[tuple[str, str], int]:
    """Poll (bounded) until every expected (event, recipient) has its inbox item."""
    wanted = {(event_id, user) for event_id, users in expected.items() for user in users}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SETTLE_TIMEOUT
    while True:
        found = await delivered(database)
        if wanted <= found.keys() or loop.time() > deadline:
            return found
        await asyncio.sleep(0.5)


async def count(database: str, sql: str) -> int:
    conn = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, database=database)
    try:
        return int(await conn.fetchval(sql))
    finally:
        await conn.close()


async def test_nothing_acknowledged_is_lost_when_a_nats_node_and_a_worker_die(
    processes: Processes, tmp_path: Path
) -> None:
    rng = random.Random(5)
    with NatsCluster(size=3, base_dir=tmp_path / "nats") as cluster:
        async with deployment(processes, tmp_path, cluster.urls, replicas=3) as deployed:
            key = await create_key(deployed.env)
            publisher = Publisher(deployed.apis, key)
            total = 1500
            dead_node = 0
            try:
                for n in range(total):
                    if n == total // 3:
                        # In the middle of the stream: one NATS node and one worker die
                        # at once, wherever they were.
                        dead_node = rng.randrange(3)
                        cluster.kill(dead_node)
                        await deployed.workers[0].kill()
                    if n == 2 * total // 3:
                        # The orchestrator brings the node back, as it would.
                        await asyncio.to_thread(cluster.start, dead_node)
                    recipients = rng.sample(USERS, rng.choice((1, 1, 2, 3)))
                    await publisher.send(n, recipients)
                    if n % 25 == 0:
                        await asyncio.sleep(0.05)
            finally:
                await publisher.close()
            found = await wait_for_inbox(deployed.database, publisher.acknowledged)
            survivor = deployed.workers[1]
            assert survivor.running(), survivor.output()
            expected = {
                (event_id, user)
                for event_id, users in publisher.acknowledged.items()
                for user in users
            }
            assert len(publisher.acknowledged) == total
            missing = expected - found.keys()
            assert not missing, f"{len(missing)} of {len(expected)} inbox items missing"
            assert {pair: n for pair, n in found.items() if n != 1} == {}
            # Nothing beyond what was acknowledged, either: a retried request wrote no twin.
            assert found.keys() == expected
            assert await count(deployed.database, "SELECT count(*) FROM events") == total
            assert await count(deployed.database, "SELECT count(*) FROM dead_letters") == 0


MACHINE_NATS = os.environ.get("TIDINGS_TEST_NATS_URL", "nats://127.0.0.1:4222")


async def test_processes_share_idempotency_live_updates_and_stop_cleanly(
    processes: Processes, tmp_path: Path
) -> None:
    """Two APIs, two workers and a scheduler on the machine's NATS: a key used through
    both APIs at once is one event; a user listening on one API hears an item a worker
    wrote for an event published on the other, and its counts, counted there; a worker
    stopped with SIGTERM exits cleanly and its partitions go on being served."""
    async with deployment(processes, tmp_path, [MACHINE_NATS], replicas=1) as deployed:
        key = await create_key(deployed.env)
        producer = {"Authorization": f"Bearer {key}"}
        token = await user_token(deployed.env, "u-bob")
        first, second = deployed.apis
        timeout = httpx.Timeout(10.0, read=60.0)
        async with (
            httpx.AsyncClient(base_url=first.base_url, timeout=timeout) as on_first,
            httpx.AsyncClient(base_url=second.base_url, timeout=timeout) as on_second,
        ):
            # The same key through both APIs at the same moment: one event, one answer.
            body = comment(1, ["u-bob"])
            answers = await asyncio.gather(
                *(
                    client.post("/v1/events", json=body, headers=producer)
                    for client in (on_first, on_second, on_first, on_second)
                )
            )
            assert {a.status_code for a in answers} == {202}, [a.text for a in answers]
            assert len({a.json()["event_id"] for a in answers}) == 1
            assert sorted(a.json()["replayed"] for a in answers) == [False, True, True, True]

            async with open_stream(on_first, token, "bob-on-first") as bob:
                published = await on_second.post(
                    "/v1/events", json=comment(2, ["u-bob"]), headers=producer
                )
                assert published.status_code == 202, published.text
                # The first event's item may still be on its way: the second one's
                # must follow it, pushed by a worker through the other API process.
                wanted = published.json()["event_id"]
                items = [(await bob.next_of("item")).json()["event_id"] for _ in range(1)]
                if items[0] != wanted:
                    items.append((await bob.next_of("item")).json()["event_id"])
                assert items[-1] == wanted, items
                # Its counts follow, worked out by the API process holding the stream:
                # both of Bob's items are unread.
                counts = (await bob.next_of("counts")).json()
                while counts["unread"] < 2:
                    counts = (await bob.next_of("counts")).json()
                assert counts == {"unread": 2, "unseen": 2, "total": 2}

            leaving, staying = deployed.workers
            assert await leaving.terminate() == 0, leaving.output()
            events = [comment(100 + n, [f"u-{n:03d}"]) for n in range(40)]
            response = await on_second.post(
                "/v1/events/batch", json={"events": events}, headers=producer
            )
            assert response.status_code == 202, response.text
            accepted = {
                e["event_id"]: [f"u-{n:03d}"] for n, e in enumerate(response.json()["events"])
            }
            found = await wait_for_inbox(deployed.database, accepted)
            assert {pair for pair in found if pair[0] in accepted} == {
                (event_id, users[0]) for event_id, users in accepted.items()
            }
            assert staying.running(), staying.output()
            assert await count(deployed.database, "SELECT count(*) FROM dead_letters") == 0
