"""The crash test: kill -9 the process that plans, mid-way, and prove nothing was lost
and nothing was done twice once a new one has finished the work.

20,000 events go in through the real API (batches of 500, each batch one planning job
per priority lane), to a thousand recipients, one to three per event. A worker with a
small batch size plans them, a few hundred events per transaction, and is SIGKILLed
once some but not all events are planned. A new worker (two, on PostgreSQL) finishes
the work. Then every count is checked against what was published: each event planned,
each of its recipients holding exactly one delivery and one inbox item, no job left, no
dead letter. The same on the embedded default with ``tidings serve`` killed and
restarted; and, on PostgreSQL, leases that run out while their jobs are still running,
so that jobs really do run twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

import asyncpg
import httpx
import pytest

from tests.conftest import (
    PG_HOST,
    PG_PORT,
    PG_USER,
    create_pg_database,
    drop_pg_database,
    pg_url,
)
from tests.e2e.procs import Process, Processes, create_key, free_port, run_cli, tidings_env

TOTAL = 20_000
API_BATCH = 500
PUBLISHERS = 4
USERS = 1000
WORKER_BATCH = 2  # jobs per lease: 2 jobs of ~250 events each, ~40 transactions in all
WAIT = 90.0  # per phase; a loaded machine is slow, a hung one is caught


# -- the workload ------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """``total`` events to one to three of ``USERS`` recipients each, published in
    batches of ``api_batch``; with ``two_lanes`` the types alternate between two
    priorities, so every batch makes a planning job in each of two lanes."""

    total: int = TOTAL
    api_batch: int = API_BATCH
    two_lanes: bool = True

    @staticmethod
    def recipients_of(i: int) -> list[str]:
        return [f"u-{(i * 7 + j * 101) % USERS:04d}" for j in range(1 + i % 3)]

    def event(self, i: int) -> dict[str, Any]:
        return {
            "type": "mention.created" if self.two_lanes and i % 2 else "comment.created",
            "idempotency_key": f"crash-{i:05d}",
            "actor": {"id": "u-ann", "name": "Ann"},
            "recipients": [{"id": user} for user in self.recipients_of(i)],
            "data": {
                "board": {"id": f"b-{i % 17}", "name": "Roadmap"},
                "comment": {"id": f"c-{i}", "text": f"comment {i}"},
            },
        }

    @property
    def jobs(self) -> int:
        """Planning jobs the API enqueues: one per batch and lane."""
        return -(-self.total // self.api_batch) * (2 if self.two_lanes else 1)

    @cached_property
    def expected(self) -> dict[str, list[str]]:
        """Idempotency key → the event's recipients, sorted."""
        return {f"crash-{i:05d}": sorted(self.recipients_of(i)) for i in range(self.total)}

    @cached_property
    def deliveries(self) -> int:
        return sum(len(users) for users in self.expected.values())


async def publish_all(base_url: str, key: str, workload: Workload) -> dict[str, str]:
    """Publish the workload in batches, a few at a time; idempotency key → event id."""
    accepted: dict[str, str] = {}
    gate = asyncio.Semaphore(PUBLISHERS)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=60.0) as client:

        async def publish(start: int) -> None:
            end = min(workload.total, start + workload.api_batch)
            batch = [workload.event(i) for i in range(start, end)]
            async with gate:
                response = await client.post("/v1/events/batch", json={"events": batch})
            assert response.status_code == 202, response.text
            results = response.json()["events"]
            assert len(results) == len(batch)
            for event, result in zip(batch, results, strict=True):
                assert result["replayed"] is False
                accepted[event["idempotency_key"]] = result["event_id"]

        starts = range(0, workload.total, workload.api_batch)
        await asyncio.gather(*(publish(start) for start in starts))
    assert len(accepted) == workload.total
    return accepted


# -- reading the database directly -------------------------------------------------------


class Sql(Protocol):
    async def rows(self, query: str) -> list[tuple[Any, ...]]: ...


class SqliteSql:
    """Reads the embedded database file beside the running processes (WAL lets it)."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def _rows(self, query: str) -> list[tuple[Any, ...]]:
        assert self._path.exists(), f"no database at {self._path}"
        with contextlib.closing(sqlite3.connect(self._path, timeout=30)) as conn:
            return conn.execute(query).fetchall()

    async def rows(self, query: str) -> list[tuple[Any, ...]]:
        return await asyncio.to_thread(self._rows, query)


class PgSql:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def rows(self, query: str) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in await self._conn.fetch(query)]


async def scalar(sql: Sql, query: str) -> Any:
    rows = await sql.rows(query)
    assert len(rows) == 1, rows
    return rows[0][0]


async def planned(sql: Sql) -> int:
    return int(await scalar(sql, "SELECT count(*) FROM events WHERE planned_at IS NOT NULL"))


async def wait_until(
    check: Callable[[], Awaitable[bool]], what: str, watched: Sequence[Process]
) -> None:
    """A bounded wait that fails with the watched processes' output, and fails at once
    when one of them has died."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while not await check():
        dead = [p for p in watched if not p.running()]
        if dead or loop.time() > deadline:
            why = f"{dead[0].name} exited" if dead else f"not within {WAIT}s"
            logs = "\n".join(f"--- {p.name}\n{p.output()}" for p in watched)
            pytest.fail(f"waiting until {what}: {why}\n{logs}")
        await asyncio.sleep(0.05)


async def all_done(sql: Sql, total: int) -> bool:
    return await planned(sql) == total and await scalar(sql, "SELECT count(*) FROM jobs") == 0


async def kill_mid_way(sql: Sql, process: Process) -> int:
    """SIGKILL ``process`` once a quarter of the events are planned, at a moment it holds
    leased jobs (so, most likely, in the middle of planning them); returns how many
    events were planned when it died, which must be some but not all of them."""

    async def under_way() -> bool:
        leased = "SELECT count(*) FROM jobs WHERE leased_by IS NOT NULL"
        return await planned(sql) >= TOTAL // 4 and await scalar(sql, leased) > 0

    await wait_until(under_way, f"{TOTAL // 4} events are planned", [process])
    await process.kill()
    assert process.popen.returncode == -signal.SIGKILL
    at_kill = await planned(sql)
    assert 0 < at_kill < TOTAL, f"{at_kill} of {TOTAL} planned when the worker was killed"
    return at_kill


# -- the proof ---------------------------------------------------------------------------


async def assert_effectively_once(sql: Sql, workload: Workload, accepted: dict[str, str]) -> None:
    """Every published event planned, and each of its recipients delivered to exactly once."""

    async def count(query: str) -> int:
        return int(await scalar(sql, query))

    async def no_rows(query: str) -> None:
        found = await sql.rows(query)
        assert found == [], f"{query}\n-> {found[:5]}"

    expected, deliveries = workload.expected, workload.deliveries
    assert await count("SELECT count(*) FROM events") == workload.total
    stored = dict(await sql.rows("SELECT idempotency_key, id FROM events"))
    assert stored == accepted, "the events stored are not the events acknowledged"
    assert await count("SELECT count(*) FROM events WHERE planned_at IS NULL") == 0
    assert await count("SELECT count(*) FROM jobs") == 0
    await no_rows("SELECT id, error FROM dead_letters")

    assert await count("SELECT count(*) FROM notifications") == deliveries
    assert await count("SELECT count(*) FROM deliveries") == deliveries
    assert await count("SELECT count(*) FROM inbox_items") == deliveries
    assert await count("SELECT count(*) FROM delivery_transitions") == 2 * deliveries
    await no_rows(
        "SELECT event_id, user_id, channel, count(*) FROM deliveries"
        " GROUP BY event_id, user_id, channel HAVING count(*) > 1"
    )
    await no_rows(
        "SELECT event_id, user_id, count(*) FROM notifications"
        " GROUP BY event_id, user_id HAVING count(*) > 1"
    )
    await no_rows(
        "SELECT state, channel, count(*) FROM deliveries"
        " WHERE state <> 'delivered' OR channel <> 'in_app' GROUP BY state, channel"
    )
    # Inbox items and deliveries are the same set: every item is its delivery's.
    matched = await count(
        "SELECT count(*) FROM inbox_items i JOIN deliveries d"
        " ON d.id = i.id AND d.event_id = i.event_id AND d.user_id = i.user_id"
    )
    assert matched == deliveries
    # Every delivery has its two transitions, planned and delivered, each once.
    await no_rows(
        "SELECT d.id, count(t.id) FROM deliveries d"
        " LEFT JOIN delivery_transitions t ON t.delivery_id = d.id"
        " GROUP BY d.id HAVING count(t.id) <> 2"
        " OR count(DISTINCT t.state) <> 2 LIMIT 5"
    )

    # And per event, exactly its recipients: no one missing, no one extra, no one twice.
    for table in ("deliveries", "inbox_items"):
        got: dict[str, list[str]] = {}
        for key, user in await sql.rows(
            f"SELECT e.idempotency_key, x.user_id FROM {table} x JOIN events e ON e.id = x.event_id"
        ):
            got.setdefault(key, []).append(user)
        wrong = [k for k in expected if sorted(got.get(k, [])) != expected[k]]
        assert not wrong, f"{table}: {len(wrong)} events with the wrong recipients, e.g. " + str(
            [(k, sorted(got.get(k, [])), expected[k]) for k in wrong[:3]]
        )
    per_user = Counter(user for users in expected.values() for user in users)
    inbox_sizes = dict(await sql.rows("SELECT user_id, count(*) FROM inbox_items GROUP BY user_id"))
    assert inbox_sizes == dict(per_user)


async def assert_event_view(
    base_url: str, key: str, workload: Workload, accepted: dict[str, str]
) -> None:
    """The API tells the same story for a few events."""
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30.0) as client:
        for i in (0, 1, workload.total // 2, workload.total - 1):
            idempotency_key = workload.event(i)["idempotency_key"]
            response = await client.get(f"/v1/events/{accepted[idempotency_key]}")
            assert response.status_code == 200, response.text
            view = response.json()
            assert view["status"] == "planned"
            users = sorted(d["user_id"] for d in view["deliveries"])
            assert users == workload.expected[idempotency_key]
            for delivery in view["deliveries"]:
                assert [t["state"] for t in delivery["transitions"]] == ["planned", "delivered"]


# -- PostgreSQL and SQLite, with separate `tidings worker` processes ---------------------


@contextlib.asynccontextmanager
async def postgres_database() -> AsyncIterator[tuple[str, Sql]]:
    """A fresh PostgreSQL database (a failure in CI when the server is missing)."""
    name = await create_pg_database()
    try:
        conn = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, database=name)
        try:
            yield pg_url(name), PgSql(conn)
        finally:
            await conn.close()
    finally:
        await drop_pg_database(name)


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
async def test_killed_worker_loses_nothing_and_repeats_nothing(
    backend: str, processes: Processes, tmp_path: Path
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        settings: dict[str, str | int | float | bool] = {
            "port": free_port(),
            "worker_batch_size": WORKER_BATCH,
            "worker_lease_seconds": 2,
        }
        if backend == "postgres":
            url, sql = await stack.enter_async_context(postgres_database())
            settings["database_url"] = url
        else:
            sql = SqliteSql(tmp_path / "data" / "tidings.db")
        env = tidings_env(tmp_path / "data", **settings)
        await asyncio.to_thread(run_cli, ["db", "upgrade"], env)

        # The API alone: everything published is queued, nothing planned yet.
        api = await processes.serve("api", {**env, "TIDINGS_WORKER_ENABLED": "false"})
        key = await create_key(env)
        workload = Workload()
        accepted = await publish_all(api.base_url, key, workload)
        assert await planned(sql) == 0
        assert await scalar(sql, "SELECT count(*) FROM jobs") == workload.jobs

        first = processes.start("worker-1", ["worker"], env)
        await kill_mid_way(sql, first)

        # The dead worker's leases run out; its successors take over. On PostgreSQL two
        # of them, competing for the same jobs.
        successors = [
            processes.start(f"worker-{n}", ["worker"], env)
            for n in range(2, 4 if backend == "postgres" else 3)
        ]

        async def finished() -> bool:
            return await all_done(sql, TOTAL)

        await wait_until(finished, f"all {TOTAL} events are planned", successors)
        for worker in successors:
            assert await worker.terminate() == 0, worker.output()
            assert "Traceback" not in worker.output(), worker.output()

        await assert_effectively_once(sql, workload, accepted)
        await assert_event_view(api.base_url, key, workload, accepted)
        await api.process.terminate()


# -- SQLite, the embedded default: `tidings serve` killed and restarted -------------------


async def test_killed_serve_restarts_and_finishes_exactly_once(
    processes: Processes, tmp_path: Path
) -> None:
    sql = SqliteSql(tmp_path / "data" / "tidings.db")
    # A lease far longer than the test: the restarted server must not wait for the dead
    # one's leases to run out (on the embedded default it releases them as it starts).
    env = tidings_env(
        tmp_path / "data",
        port=free_port(),
        worker_batch_size=WORKER_BATCH,
        worker_lease_seconds=3600,
    )

    publishing = await processes.serve("serve-publish", {**env, "TIDINGS_WORKER_ENABLED": "false"})
    key = await create_key(env)
    workload = Workload()
    accepted = await publish_all(publishing.base_url, key, workload)
    await publishing.process.terminate()
    assert await planned(sql) == 0

    crashing = await processes.serve("serve-crash", env)
    await kill_mid_way(sql, crashing.process)

    restarted = await processes.serve("serve-restarted", env)

    async def finished() -> bool:
        return await all_done(sql, TOTAL)

    await wait_until(finished, f"all {TOTAL} events are planned", [restarted.process])

    # A producer that never heard back retries its batch: the same events, replayed.
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=restarted.base_url, headers=headers) as client:
        batch = [workload.event(i) for i in range(API_BATCH)]
        response = await client.post("/v1/events/batch", json={"events": batch}, timeout=60.0)
    assert response.status_code == 202, response.text
    results = response.json()["events"]
    assert all(result["replayed"] for result in results)
    assert [r["event_id"] for r in results] == [accepted[e["idempotency_key"]] for e in batch]

    await assert_event_view(restarted.base_url, key, workload, accepted)
    await restarted.process.terminate()
    assert "Traceback" not in restarted.process.output(), restarted.process.output()
    await assert_effectively_once(sql, workload, accepted)


# -- PostgreSQL: leases that run out while the work is still going on ---------------------


@pytest.mark.postgres
async def test_jobs_leased_again_while_still_running_are_recorded_once(
    processes: Processes, tmp_path: Path
) -> None:
    """A lease far shorter than the work it covers: while one worker plans a job, the
    lease runs out and the other workers lease and plan the same job too. Every row is
    written under an id derived from (event, recipient, channel), so the repeats must
    change nothing."""
    workload = Workload(total=6_000, two_lanes=False)  # 12 jobs of 500 events each
    async with postgres_database() as (url, sql):
        env = tidings_env(
            tmp_path / "data",
            port=free_port(),
            database_url=url,
            worker_batch_size=1,
            worker_lease_seconds=0.1,
        )
        await asyncio.to_thread(run_cli, ["db", "upgrade"], env)
        api = await processes.serve("api", {**env, "TIDINGS_WORKER_ENABLED": "false"})
        key = await create_key(env)
        accepted = await publish_all(api.base_url, key, workload)
        assert await scalar(sql, "SELECT count(*) FROM jobs") == workload.jobs

        workers = [processes.start(f"worker-{n}", ["worker"], env) for n in (1, 2, 3)]
        most_leases = 0

        async def finished() -> bool:
            nonlocal most_leases
            leases = await scalar(sql, "SELECT coalesce(max(attempts), 0) FROM jobs")
            most_leases = max(most_leases, int(leases))
            return await all_done(sql, workload.total)

        await wait_until(finished, f"all {workload.total} events are planned", workers)
        # Attempts count leases; no job failed (no retries, no dead letters, below), so a
        # job leased twice was run by a second worker while the first still had it.
        assert most_leases >= 2, "no job was ever leased twice: the race never happened"
        for worker in workers:
            assert await worker.terminate() == 0, worker.output()
            assert "Traceback" not in worker.output(), worker.output()
            assert "failed" not in worker.output(), worker.output()

        await assert_effectively_once(sql, workload, accepted)
        await api.process.terminate()
