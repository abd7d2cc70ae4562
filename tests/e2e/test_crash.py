"""The crash tests: kill -9 the processes that plan and send, mid-way, and prove nothing
was lost and nothing was done twice once a new one has finished the work.

3,000 events go in through the real API (batches of 100, each batch one planning job per
priority lane), to a thousand recipients, one to three per event; a third of the users
give an email address with them. A third of the events are password resets (critical,
so planned first and emailed before anything else is planned), a third mentions (in-app
only), a third comments (in-app and email). A worker with a small batch size is
SIGKILLed while it plans, some but not all events planned. A second one is SIGKILLed
while it sends email: paused the moment it has handed messages to the provider (the
built-in mail catcher) but not yet recorded them as sent, then killed. A third worker
(two, on PostgreSQL) finishes the work.

Then everything is checked against what was published: each event planned; for each of
its recipients one notification, one in-app delivery and one inbox item, and for the
types with email one email delivery, sent to those with an address (each message caught
exactly once, those handed over before the kill not caught again) or suppressed
(``no_address``) for the others, each delivery with exactly its transitions; no job
left, no dead letter. The same on the embedded default with ``tidings serve`` killed
twice and restarted; and, on PostgreSQL, leases that run out while their jobs are still
running, so that jobs really do run twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
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
import yaml

from tests.conftest import (
    CATALOG,
    PG_HOST,
    PG_PORT,
    PG_USER,
    create_pg_database,
    drop_pg_database,
    pg_url,
)
from tests.e2e.procs import Process, Processes, create_key, free_port, run_cli, tidings_env

TOTAL = 3_000
API_BATCH = 100
PUBLISHERS = 4
PUBLISH_ATTEMPTS = 5
USERS = 1000
# Jobs per lease: up to 6 planning jobs of ~33 events each (~15 planning transactions in
# all), or 6 email jobs of one message each.
WORKER_BATCH = 6
# Password resets are critical, so planned first; mentions have no email channel.
TYPES = ("auth.password_reset", "mention.created", "comment.created")
WAIT = 90.0  # per phase; a loaded machine is slow, a hung one is caught

IN_APP = "in_app"
EMAIL = "email"
# What each delivery must have been through, by channel and final state.
# Every delivery: the rows, and the in-app deliveries that are their inbox item.
EVERY = (
    "(SELECT id, event_id, user_id, channel, state, reason FROM deliveries"
    " UNION ALL SELECT i.id, i.event_id, i.user_id, 'in_app', 'delivered', NULL"
    " FROM inbox_items i WHERE NOT EXISTS (SELECT 1 FROM deliveries x WHERE x.id = i.id)) d"
)
TRANSITIONS = {
    (IN_APP, "delivered"): ("planned", "delivered"),
    (EMAIL, "sent"): ("planned", "scheduled", "sent"),
    (EMAIL, "suppressed"): ("planned", "suppressed"),
}


# -- the workload ------------------------------------------------------------------------


@functools.cache
def declared(type_key: str) -> dict[str, Any]:
    """A type of the shipped catalog, read straight from its YAML file."""
    document: dict[str, Any] = yaml.safe_load((CATALOG / f"{type_key}.yaml").read_text())
    assert document["key"] == type_key
    return document


def channels_of(type_key: str) -> frozenset[str]:
    return frozenset(declared(type_key)["channels"])


@dataclass(frozen=True)
class Workload:
    """``total`` events to one to three of ``USERS`` recipients each, published in
    batches of ``api_batch``; event ``i`` is of type ``types[i % len(types)]``. One user
    in ``address_every`` gives an email address along with the events that name them."""

    total: int = TOTAL
    api_batch: int = API_BATCH
    types: tuple[str, ...] = TYPES
    address_every: int = 3

    def address_of(self, user: str) -> str | None:
        number = int(user.removeprefix("u-"))
        return f"{user}@example.com" if number % self.address_every == 0 else None

    @staticmethod
    def recipients_of(i: int) -> list[str]:
        return [f"u-{(i * 7 + j * 101) % USERS:04d}" for j in range(1 + i // 3 % 3)]

    def type_of(self, i: int) -> str:
        return self.types[i % len(self.types)]

    def event(self, i: int) -> dict[str, Any]:
        type_key = self.type_of(i)
        if type_key == "auth.password_reset":
            data: dict[str, Any] = {
                "reset_url": f"https://app.example.com/reset?token=t-{i}",
                "expires_in_minutes": 30,
            }
        else:
            data = {
                "board": {"id": f"b-{i % 17}", "name": "Roadmap"},
                "comment": {"id": f"c-{i}", "text": f"comment {i}"},
            }
        recipients = []
        for user in self.recipients_of(i):
            address = self.address_of(user)
            recipients.append({"id": user} if address is None else {"id": user, "email": address})
        return {
            "type": type_key,
            "idempotency_key": f"crash-{i:05d}",
            "actor": {"id": "u-ann", "name": "Ann"},
            "recipients": recipients,
            "data": data,
        }

    @property
    def jobs(self) -> int:
        """Planning jobs the API enqueues: one per batch and priority (each its lane)."""
        batches = [
            range(start, min(self.total, start + self.api_batch))
            for start in range(0, self.total, self.api_batch)
        ]
        return sum(len({declared(self.type_of(i))["priority"] for i in b}) for b in batches)

    @cached_property
    def expected(self) -> dict[str, list[str]]:
        """Idempotency key → the event's recipients, sorted."""
        return {f"crash-{i:05d}": sorted(self.recipients_of(i)) for i in range(self.total)}

    @cached_property
    def deliveries(self) -> Counter[tuple[str, str, str, str, str | None]]:
        """(idempotency key, user, channel, state, reason) of every delivery there must
        be once the work is done, each once."""
        expected: Counter[tuple[str, str, str, str, str | None]] = Counter()
        for i in range(self.total):
            key, channels = f"crash-{i:05d}", channels_of(self.type_of(i))
            assert channels <= {IN_APP, EMAIL}, channels
            for user in self.recipients_of(i):
                if IN_APP in channels:
                    expected[(key, user, IN_APP, "delivered", None)] += 1
                if EMAIL in channels:
                    if self.address_of(user) is None:
                        expected[(key, user, EMAIL, "suppressed", "no_address")] += 1
                    else:
                        expected[(key, user, EMAIL, "sent", None)] += 1
        return expected

    def count(self, channel: str, state: str | None = None) -> int:
        """Deliveries there must be on ``channel`` (in ``state``, if given)."""
        return sum(
            n
            for (_, _, ch, st, _), n in self.deliveries.items()
            if ch == channel and state in (None, st)
        )

    @property
    def emails_sent(self) -> int:
        return self.count(EMAIL, "sent")


def test_the_workload_covers_every_case() -> None:
    """The crash tests prove something only if the work mixes every kind of delivery."""
    workload = Workload()
    assert EMAIL in channels_of("comment.created")
    assert EMAIL in channels_of("auth.password_reset")
    assert channels_of("mention.created") == {IN_APP}
    assert declared("auth.password_reset")["priority"] == "critical"
    for channel, state in TRANSITIONS:
        assert workload.count(channel, state) > 1000, (channel, state)
    assert workload.count(IN_APP) == sum(len(users) for users in workload.expected.values())
    assert set(workload.deliveries.values()) == {1}
    assert workload.jobs == 3 * (TOTAL // API_BATCH)


async def publish_all(base_url: str, key: str, workload: Workload) -> dict[str, str]:
    """Publish the workload in batches, a few at a time; idempotency key → event id.

    A batch answered 500 ("nothing was accepted") is sent again, as the API tells a
    producer to: concurrent batches naming the same users with profile fields can
    deadlock on PostgreSQL (a Tidings bug), and the server then closes the connection
    too, so a batch can also go unanswered. Its retry must be accepted as new after a
    500; after no answer at all it may be a replay, with the same ids either way."""
    accepted: dict[str, str] = {}
    gate = asyncio.Semaphore(PUBLISHERS)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=60.0) as client:

        async def send(batch: list[dict[str, Any]]) -> tuple[httpx.Response, bool]:
            """The answer, and whether an earlier attempt may have been accepted."""
            unanswered = False
            for _ in range(PUBLISH_ATTEMPTS - 1):
                try:
                    response = await client.post("/v1/events/batch", json={"events": batch})
                except httpx.TransportError:
                    unanswered = True
                    continue
                if response.status_code != 500:
                    return response, unanswered
                assert response.json()["error"]["code"] == "internal", response.text
            return await client.post("/v1/events/batch", json={"events": batch}), unanswered

        async def publish(start: int) -> None:
            end = min(workload.total, start + workload.api_batch)
            batch = [workload.event(i) for i in range(start, end)]
            async with gate:
                response, unanswered = await send(batch)
            assert response.status_code == 202, response.text
            results = response.json()["events"]
            assert len(results) == len(batch)
            replays = {result["replayed"] for result in results}
            assert replays == {False} or (unanswered and replays == {True}), results
            for event, result in zip(batch, results, strict=True):
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


async def count(sql: Sql, query: str) -> int:
    return int(await scalar(sql, query))


async def planned(sql: Sql) -> int:
    return await count(sql, "SELECT count(*) FROM events WHERE planned_at IS NOT NULL")


async def leased(sql: Sql, kind: str) -> int:
    return await count(
        sql, f"SELECT count(*) FROM jobs WHERE kind = '{kind}' AND leased_by IS NOT NULL"
    )


async def caught(sql: Sql) -> int:
    return await count(sql, "SELECT count(*) FROM mailbox")


async def sent(sql: Sql) -> int:
    return await count(
        sql, "SELECT count(*) FROM deliveries WHERE channel = 'email' AND state = 'sent'"
    )


def unconfirmed_by(pid: int) -> str:
    """The messages the process ``pid`` handed to the provider (the mail catcher) whose
    deliveries it has not recorded as sent yet: its email jobs, leased and unfinished,
    inside the window between handing a batch over and committing the outcome."""
    return (
        "SELECT m.id, m.message_id, m.raw FROM mailbox m"
        " JOIN deliveries d ON d.id = m.id"
        " JOIN jobs j ON j.id = 'email:' || m.id"
        f" WHERE d.state = 'scheduled' AND j.leased_by LIKE '%:{pid}:%'"
    )


async def wait_until(
    check: Callable[[], Awaitable[bool]],
    what: str,
    watched: Sequence[Process],
    *,
    poll: float = 0.05,
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
        await asyncio.sleep(poll)


async def all_done(sql: Sql, total: int) -> bool:
    return await planned(sql) == total and await count(sql, "SELECT count(*) FROM jobs") == 0


async def kill_while_planning(sql: Sql, process: Process, workload: Workload) -> int:
    """SIGKILL ``process`` once a sixth of the events are planned (half the password
    resets, which go first), at a moment it holds leased planning jobs, so most likely
    in the middle of planning them; returns how many events were planned when it died,
    which must be some but not all of them."""
    threshold = workload.total // 6

    async def under_way() -> bool:
        return await planned(sql) >= threshold and await leased(sql, "plan") > 0

    await wait_until(under_way, f"{threshold} events are planned", [process])
    await process.kill()
    assert process.popen.returncode == -signal.SIGKILL
    at_kill = await planned(sql)
    assert 0 < at_kill < workload.total, f"{at_kill} of {workload.total} planned at the kill"
    return at_kill


SETTLE = 0.2  # for a commit already on its way to the database to land


async def kill_while_sending(
    sql: Sql, process: Process, workload: Workload
) -> dict[str, tuple[str, str]]:
    """SIGKILL ``process`` while it sends email, at a moment it has handed messages to
    the provider but not recorded them as sent: some but not all email sent, and some
    sent but not known to be. Returns those: delivery id → (Message-ID, raw message).

    The moment is caught, not hoped for: once the window is seen open, the process is
    paused (SIGSTOP) and looked at again; if the window closed meanwhile, it resumes."""

    async def window_open() -> bool:
        if not await sql.rows(unconfirmed_by(process.pid)):
            return False
        process.popen.send_signal(signal.SIGSTOP)
        await asyncio.sleep(SETTLE)
        if await sql.rows(unconfirmed_by(process.pid)):
            return True
        process.popen.send_signal(signal.SIGCONT)
        return False

    await wait_until(window_open, "email is handed over, not yet recorded", [process], poll=0.005)
    await process.kill()
    assert process.popen.returncode == -signal.SIGKILL
    unconfirmed = {
        delivery_id: (message_id, raw)
        for delivery_id, message_id, raw in await sql.rows(unconfirmed_by(process.pid))
    }
    in_mailbox, recorded = await caught(sql), await sent(sql)
    counts = f"{in_mailbox} caught, {recorded} sent, {len(unconfirmed)} not recorded"
    assert unconfirmed, counts
    assert recorded + len(unconfirmed) <= in_mailbox < workload.emails_sent, counts
    return unconfirmed


# -- the proof ---------------------------------------------------------------------------


async def assert_resent_once(sql: Sql, unconfirmed: dict[str, tuple[str, str]]) -> None:
    """What was handed over but not recorded when the sender died was sent again by its
    successor — same Message-ID — and the mailbox kept the first copy only."""
    assert all(delivery_id.replace("-", "").isalnum() for delivery_id in unconfirmed)
    listed = ", ".join(f"'{delivery_id}'" for delivery_id in unconfirmed)
    found = {
        delivery_id: (state, message_id)
        for delivery_id, state, message_id in await sql.rows(
            f"SELECT id, state, message_id FROM deliveries WHERE id IN ({listed})"
        )
    }
    mailbox = {
        row_id: (message_id, raw)
        for row_id, message_id, raw in await sql.rows(
            f"SELECT id, message_id, raw FROM mailbox WHERE id IN ({listed})"
        )
    }
    for delivery_id, (message_id, raw) in unconfirmed.items():
        assert found[delivery_id] == ("sent", message_id), delivery_id
        assert mailbox[delivery_id] == (message_id, raw), delivery_id


async def assert_effectively_once(sql: Sql, workload: Workload, accepted: dict[str, str]) -> None:
    """Every published event planned; each of its recipients with exactly one delivery
    per channel of its type, in the state that recipient calls for, with exactly its
    transitions; each email sent caught once; nothing left over."""

    async def no_rows(query: str) -> None:
        found = await sql.rows(query)
        assert found == [], f"{query}\n-> {found[:5]}"

    expected = workload.expected
    recipients = sum(len(users) for users in expected.values())
    assert await count(sql, "SELECT count(*) FROM events") == workload.total
    stored = dict(await sql.rows("SELECT idempotency_key, id FROM events"))
    assert stored == accepted, "the events stored are not the events acknowledged"
    assert await count(sql, "SELECT count(*) FROM events WHERE planned_at IS NULL") == 0
    assert await count(sql, "SELECT count(*) FROM jobs") == 0
    await no_rows("SELECT id, kind, error FROM dead_letters")

    # One notification per (event, recipient): its deliveries share one id (an in-app
    # delivery that is its item reads it null: it is derived from the pair).
    assert (
        await count(sql, f"SELECT count(*) FROM (SELECT DISTINCT event_id, user_id FROM {EVERY}) n")
        == recipients
    )
    await no_rows(
        "SELECT event_id, user_id, count(DISTINCT notification_id) FROM deliveries"
        " GROUP BY event_id, user_id HAVING count(DISTINCT notification_id) > 1"
    )

    # Deliveries: per (event, recipient, channel) exactly one, in the expected state.
    await no_rows(
        f"SELECT event_id, user_id, channel, count(*) FROM {EVERY}"
        " GROUP BY event_id, user_id, channel HAVING count(*) > 1"
    )
    got = Counter(
        await sql.rows(
            "SELECT e.idempotency_key, d.user_id, d.channel, d.state, d.reason"
            f" FROM {EVERY} JOIN events e ON e.id = d.event_id"
        )
    )
    missing, extra = workload.deliveries - got, got - workload.deliveries
    assert not missing, f"{missing.total()} deliveries missing, e.g. {list(missing)[:3]}"
    assert not extra, f"{extra.total()} unexpected deliveries, e.g. {list(extra)[:3]}"
    assert await count(sql, f"SELECT count(*) FROM {EVERY}") == workload.deliveries.total()
    await no_rows(
        "SELECT notification_id FROM deliveries GROUP BY notification_id"
        " HAVING count(DISTINCT event_id) > 1 OR count(DISTINCT user_id) > 1 LIMIT 5"
    )

    # Transitions: each delivery exactly those of its channel and state, each once.
    states: dict[str, tuple[str, str]] = {
        delivery_id: (channel, state)
        for delivery_id, channel, state in await sql.rows(f"SELECT id, channel, state FROM {EVERY}")
    }
    history: dict[str, list[str]] = {}
    for delivery_id, state, reason in await sql.rows(
        "SELECT delivery_id, state, reason FROM delivery_transitions"
    ):
        history.setdefault(delivery_id, []).append(state)
        if state == "suppressed":
            assert reason == "no_address", (delivery_id, reason)
    assert history.keys() <= states.keys(), "transitions of deliveries that do not exist"
    # A delivery still in its first state has none logged: its row is that state.
    unchanged = states.keys() - history.keys()
    wrong = [
        (delivery_id, states[delivery_id], sorted(seen))
        for delivery_id, seen in history.items()
        if sorted(seen) != sorted(TRANSITIONS[states[delivery_id]])
    ] + [
        (delivery_id, states[delivery_id], [])
        for delivery_id in unchanged
        if len(TRANSITIONS[states[delivery_id]]) != 2
    ]
    assert not wrong, f"{len(wrong)} deliveries with the wrong transitions, e.g. {wrong[:3]}"
    assert await count(sql, "SELECT count(*) FROM delivery_transitions") == sum(
        n * len(TRANSITIONS[(channel, state)])
        for (_, _, channel, state, _), n in workload.deliveries.items()
        if len(TRANSITIONS[(channel, state)]) > 2
    )

    # In-app: one inbox item per in-app delivery, the same set; per user, the right size.
    assert await count(sql, "SELECT count(*) FROM inbox_items") == workload.count(IN_APP)
    matched = await count(
        sql,
        f"SELECT count(*) FROM inbox_items i JOIN {EVERY} ON d.id = i.id"
        " AND d.event_id = i.event_id AND d.user_id = i.user_id AND d.channel = 'in_app'",
    )
    assert matched == workload.count(IN_APP)
    got_items: dict[str, list[str]] = {}
    for key, user in await sql.rows(
        "SELECT e.idempotency_key, i.user_id FROM inbox_items i JOIN events e ON e.id = i.event_id"
    ):
        got_items.setdefault(key, []).append(user)
    wrong_items = [k for k in expected if sorted(got_items.get(k, [])) != expected[k]]
    assert not wrong_items, f"{len(wrong_items)} events with the wrong inbox items, e.g. " + str(
        [(k, sorted(got_items.get(k, [])), expected[k]) for k in wrong_items[:3]]
    )
    per_user = Counter(user for users in expected.values() for user in users)
    inbox_sizes = dict(await sql.rows("SELECT user_id, count(*) FROM inbox_items GROUP BY user_id"))
    assert inbox_sizes == dict(per_user)

    # Email: each sent delivery caught exactly once, under its id and Message-ID, by the
    # recipient's address; nothing caught that was not sent.
    sent_rows = await sql.rows(
        "SELECT id, user_id, message_id, provider FROM deliveries"
        " WHERE channel = 'email' AND state = 'sent'"
    )
    assert len(sent_rows) == workload.emails_sent
    assert await caught(sql) == len(sent_rows), "the mailbox and the sent deliveries differ"
    mailbox = {
        row_id: (delivery_id, message_id, recipient)
        for row_id, delivery_id, message_id, recipient in await sql.rows(
            "SELECT id, delivery_id, message_id, recipient FROM mailbox"
        )
    }
    assert len({message_id for _, _, message_id, _ in sent_rows}) == len(sent_rows)
    for delivery_id, user, message_id, provider in sent_rows:
        assert message_id, delivery_id
        assert provider == "catcher", (delivery_id, provider)
        assert mailbox.get(delivery_id) == (delivery_id, message_id, workload.address_of(user))
    await no_rows(
        "SELECT id, channel, state, message_id FROM deliveries"
        " WHERE state <> 'sent' AND (message_id IS NOT NULL OR provider IS NOT NULL) LIMIT 5"
    )

    # The addresses came with the events: exactly the users who gave one have one.
    profiles = dict(await sql.rows("SELECT id, email FROM users WHERE email IS NOT NULL"))
    addresses = {user: workload.address_of(user) for user in per_user}
    assert profiles == {user: address for user, address in addresses.items() if address}


async def assert_event_view(
    base_url: str, key: str, workload: Workload, accepted: dict[str, str]
) -> None:
    """The API tells the same story for a few events, and the mailbox for a recipient."""
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30.0) as client:
        for i in (0, 1, 2, workload.total // 2, workload.total - 1):
            idempotency_key = workload.event(i)["idempotency_key"]
            response = await client.get(f"/v1/events/{accepted[idempotency_key]}")
            assert response.status_code == 200, response.text
            view = response.json()
            assert view["status"] == "planned"
            assert view["next_cursor"] is None
            got = sorted(
                (idempotency_key, d["user_id"], d["channel"], d["state"], d["reason"])
                for d in view["deliveries"]
            )
            assert got == sorted(d for d in workload.deliveries if d[0] == idempotency_key)
            for delivery in view["deliveries"]:
                assert (
                    tuple(t["state"] for t in delivery["transitions"])
                    == TRANSITIONS[(delivery["channel"], delivery["state"])]
                )
                assert (delivery["message_id"] is not None) == (delivery["state"] == "sent")

        user = "u-0000"
        emails = [d for d in workload.deliveries if d[1] == user and d[3] == "sent"]
        response = await client.get(
            "/v1/dev/mailbox", params={"to": workload.address_of(user), "limit": 500}
        )
        assert response.status_code == 200, response.text
        messages = response.json()["messages"]
        assert len(messages) == len(emails) > 0
        assert len({m["id"] for m in messages}) == len(messages)
        assert {m["to"] for m in messages} == {workload.address_of(user)}


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
        assert await count(sql, "SELECT count(*) FROM jobs") == workload.jobs

        # One worker killed while it plans, the next while it sends email.
        await kill_while_planning(sql, processes.start("worker-1", ["worker"], env), workload)
        sending = processes.start("worker-2", ["worker"], env)
        unconfirmed = await kill_while_sending(sql, sending, workload)

        # The dead workers' leases run out; their successors take over. On PostgreSQL two
        # of them, competing for the same jobs.
        successors = [
            processes.start(f"worker-{n}", ["worker"], env)
            for n in range(3, 5 if backend == "postgres" else 4)
        ]

        async def finished() -> bool:
            return await all_done(sql, workload.total)

        await wait_until(finished, f"all {workload.total} events are done", successors)
        for worker in successors:
            assert await worker.terminate() == 0, worker.output()
            assert "Traceback" not in worker.output(), worker.output()

        await assert_effectively_once(sql, workload, accepted)
        await assert_resent_once(sql, unconfirmed)
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

    crashing = await processes.serve("serve-crash-1", env)
    await kill_while_planning(sql, crashing.process, workload)
    crashing = await processes.serve("serve-crash-2", env)
    unconfirmed = await kill_while_sending(sql, crashing.process, workload)

    restarted = await processes.serve("serve-restarted", env)

    async def finished() -> bool:
        return await all_done(sql, workload.total)

    await wait_until(finished, f"all {workload.total} events are done", [restarted.process])

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
    await assert_resent_once(sql, unconfirmed)


# -- PostgreSQL: leases that run out while the work is still going on ---------------------


@pytest.mark.postgres
async def test_jobs_leased_again_while_still_running_are_recorded_once(
    processes: Processes, tmp_path: Path
) -> None:
    """A lease far shorter than the work it covers: while one worker plans a job, the
    lease runs out and the other workers lease and plan the same job too. Every row is
    written under an id derived from (event, recipient, channel), so the repeats must
    change nothing; the email jobs they queue again send nothing twice."""
    # 5 planning jobs of 300 comments each, each comment also emailed to the recipients
    # with an address (fewer of them here: every email job is leased on its own).
    workload = Workload(total=1_500, api_batch=300, types=("comment.created",), address_every=6)
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
        assert await count(sql, "SELECT count(*) FROM jobs") == workload.jobs

        workers = [processes.start(f"worker-{n}", ["worker"], env) for n in (1, 2, 3)]
        most_leases = 0

        async def finished() -> bool:
            nonlocal most_leases
            leases = await scalar(
                sql, "SELECT coalesce(max(attempts), 0) FROM jobs WHERE kind = 'plan'"
            )
            most_leases = max(most_leases, int(leases))
            return await all_done(sql, workload.total)

        await wait_until(finished, f"all {workload.total} events are done", workers)
        # Attempts count leases; no job failed (no retries, no dead letters, below), so a
        # job leased twice was run by a second worker while the first still had it.
        assert most_leases >= 2, "no job was ever leased twice: the race never happened"
        for worker in workers:
            assert await worker.terminate() == 0, worker.output()
            assert "Traceback" not in worker.output(), worker.output()
            assert "failed" not in worker.output(), worker.output()

        await assert_effectively_once(sql, workload, accepted)
        await api.process.terminate()
