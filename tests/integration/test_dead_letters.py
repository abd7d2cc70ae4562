"""Dead letters: listed, inspected, replayed (one, or all of a kind) and discarded, over
HTTP and the CLI; a replay goes through the pipeline's idempotency, so replaying twice
delivers once."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from typer.testing import CliRunner

from tests.conftest import CATALOG, eventually
from tests.integration.test_jetstream_pipeline import Running, tidings  # noqa: F401
from tests.smtp_sink import SmtpSink
from tidings.app.asgi import create_app
from tidings.app.runtime import Runtime
from tidings.app.wiring import build_runtime
from tidings.cli import app as cli
from tidings.kit import migrate, tables
from tidings.kit.db import Database
from tidings.kit.queue import Job, NewJob
from tidings.kit.queue_sql import dead_letter_row
from tidings.kit.settings import Settings

COUNTED = (
    tables.deliveries,
    tables.delivery_transitions,
    tables.inbox_items,
    tables.jobs,
)


@pytest.fixture
def settings(make_settings: Callable[..., Settings], database_url: str) -> Settings:
    return make_settings(database_url=database_url, job_max_attempts=2)


@pytest.fixture
async def operator(runtime: Runtime) -> dict[str, str]:
    _key, plaintext = await runtime.auth.create_key("ops", ["admin"])
    return {"Authorization": f"Bearer {plaintext}"}


async def bury(db: Database, *jobs: Job, error: str = "boom") -> None:
    """Dead letters as a worker leaves them, for jobs that never ran here."""
    now = dt.datetime.now(dt.UTC)
    async with db.transaction() as conn:
        for job in jobs:
            await conn.execute(
                tables.dead_letters.insert().values(**dead_letter_row(job, error, now))
            )


async def counts(runtime: Runtime) -> dict[str, int]:
    async with runtime.db.reader() as conn:
        return {
            table.name: int(
                (await conn.execute(sa.select(sa.func.count()).select_from(table))).scalar_one()
            )
            for table in (*COUNTED, tables.dead_letters)
        }


async def test_a_poison_job_is_listed_shown_and_discarded(
    client: httpx.AsyncClient, runtime: Runtime, operator: dict[str, str], producer: dict[str, str]
) -> None:
    async with runtime.db.transaction() as conn:
        await runtime.queue.enqueue(
            conn, [NewJob(id="plan:ghost", kind="plan", payload={"events": ["no-such-event"]})]
        )
    runtime.queue.wake()
    await eventually(lambda: _has_dead(runtime, 1))

    refused = await client.get("/v1/dead-letters", headers=producer)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "forbidden"

    listed = (await client.get("/v1/dead-letters", headers=operator)).json()
    [item] = listed["items"]
    assert (item["id"], item["kind"], item["attempts"]) == ("plan:ghost", "plan", 2)
    assert "no-such-event" in item["error"]
    assert listed["next_cursor"] is None
    assert (await client.get("/v1/dead-letters?kind=email", headers=operator)).json()["items"] == []

    shown = (await client.get("/v1/dead-letters/plan:ghost", headers=operator)).json()
    assert shown["payload"] == {"events": ["no-such-event"]}

    assert (await client.delete("/v1/dead-letters/plan:ghost", headers=operator)).status_code == 204
    gone = await client.get("/v1/dead-letters/plan:ghost", headers=operator)
    assert gone.status_code == 404
    assert gone.json()["error"]["code"] == "not_found"
    assert (await client.delete("/v1/dead-letters/plan:ghost", headers=operator)).status_code == 404
    assert (await counts(runtime))["jobs"] == 0


async def test_replaying_a_kind_runs_each_job_again_and_done_work_is_not_redone(
    client: httpx.AsyncClient,
    runtime: Runtime,
    operator: dict[str, str],
    producer: dict[str, str],
    canonical_event: dict[str, Any],
) -> None:
    events = []
    for n in range(2):
        body = {**canonical_event, "idempotency_key": f"k{n}", "recipients": [f"u-{n}"]}
        response = await client.post("/v1/events", json=body, headers=producer)
        events.append(response.json()["event_id"])
    await eventually(lambda: _drained(runtime, inbox=2))
    before = await counts(runtime)
    await bury(
        runtime.db,
        *(Job(f"plan:lost-{n}", "plan", {"events": [e]}, 1, 2) for n, e in enumerate(events)),
        Job("digest:other", "digest", {"digest": "none"}, 2, 2),
    )
    replayed = await client.post("/v1/dead-letters/replay", json={"kind": "plan"}, headers=operator)
    assert replayed.status_code == 200, replayed.text
    assert replayed.json()["replayed"] == 2
    await eventually(lambda: _drained(runtime, inbox=2))
    after = await counts(runtime)
    assert after == {**before, "dead_letters": 1}
    again = await client.post("/v1/dead-letters/replay", json={"kind": "plan"}, headers=operator)
    assert again.json()["replayed"] == 0
    empty = await client.post("/v1/dead-letters/replay", json={"kind": ""}, headers=operator)
    assert empty.status_code == 422


async def _has_dead(runtime: Runtime, n: int) -> bool:
    return (await counts(runtime))["dead_letters"] == n


async def _drained(runtime: Runtime, *, inbox: int) -> bool:
    found = await counts(runtime)
    return found["jobs"] == 0 and found["inbox_items"] == inbox


# Over real SMTP: an email job buried while the relay refused, replayed once it is back.


@pytest.fixture
async def sink() -> AsyncIterator[SmtpSink]:
    async with SmtpSink() as server:
        yield server


@pytest.fixture
async def smtp_app(
    make_settings: Callable[..., Settings], database_url: str, sink: SmtpSink
) -> AsyncIterator[FastAPI]:
    settings = make_settings(
        database_url=database_url,
        email_provider="smtp",
        smtp_host="127.0.0.1",
        smtp_port=sink.port,
        smtp_security="none",
        job_max_attempts=2,
    )
    application = create_app(runtime=build_runtime(settings))
    async with application.router.lifespan_context(application):
        yield application


async def test_an_email_replayed_twice_is_sent_once(
    smtp_app: FastAPI, sink: SmtpSink, canonical_event: dict[str, Any]
) -> None:
    runtime: Runtime = smtp_app.state.runtime
    _k, producer_key = await runtime.auth.create_key("tests", ["*"])
    _k, operator_key = await runtime.auth.create_key("ops", ["admin"])
    producer = {"Authorization": f"Bearer {producer_key}"}
    operator = {"Authorization": f"Bearer {operator_key}"}
    sink.respond_with(["451 4.3.0 try again later"] * 2)
    transport = httpx.ASGITransport(app=smtp_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t.test") as client:
        response = await client.post("/v1/events", json=canonical_event, headers=producer)
        event_id = response.json()["event_id"]
        await eventually(lambda: _has_dead(runtime, 1))

        async def email() -> dict[str, Any]:
            view = (await client.get(f"/v1/events/{event_id}", headers=producer)).json()
            [found] = [d for d in view["deliveries"] if d["channel"] == "email"]
            return found

        failed = await email()
        assert (failed["state"], failed["reason"]) == ("failed", "retries_exhausted")
        [dead] = (await client.get("/v1/dead-letters", headers=operator)).json()["items"]
        assert dead["kind"] == "email"
        assert dead["payload"]["delivery"] == failed["id"]
        assert dead["attempts"] == 2
        assert "451" in dead["error"]
        async with runtime.db.reader() as conn:
            saved = dict((await conn.execute(sa.select(tables.dead_letters))).one()._mapping)

        replay = await client.post(f"/v1/dead-letters/{dead['id']}/replay", headers=operator)
        assert replay.status_code == 200, replay.text
        assert replay.json() == {"replayed": 1, "ids": [dead["id"]]}

        async def sent() -> bool:
            return (await email())["state"] == "sent"

        await eventually(sent)
        await sink.wait_for(1)
        second = await client.post(f"/v1/dead-letters/{dead['id']}/replay", headers=operator)
        assert second.status_code == 404

        # The same job buried again (a copy left by another worker) and replayed: the
        # delivery is sent already, so nothing goes out.
        async with runtime.db.transaction() as conn:
            await conn.execute(tables.dead_letters.insert().values(**saved))
        third = await client.post(f"/v1/dead-letters/{dead['id']}/replay", headers=operator)
        assert third.status_code == 200
        await eventually(lambda: _jobs_done(runtime))
        assert len(sink.received) == 1
        timeline = (await client.get(f"/v1/deliveries/{failed['id']}", headers=producer)).json()
        assert timeline["state"] == "sent"
        replays = [t for t in timeline["transitions"] if t["reason"] == "replayed"]
        assert [(t["state"], t["stage"]) for t in replays] == [("scheduled", "replay")]
        assert timeline["transitions"][-1]["state"] == "sent"
        assert timeline["transitions"][-1]["stage"] == "email"


async def _jobs_done(runtime: Runtime) -> bool:
    found = await counts(runtime)
    return found["jobs"] == 0 and found["dead_letters"] == 0


# On JetStream: the replayed job is written to the outbox and relayed to its stream.


async def test_a_replay_on_jetstream_goes_through_the_outbox(
    tidings: Running,  # noqa: F811
    canonical_event: dict[str, Any],
) -> None:
    runtime = tidings.runtime
    response = await tidings.client.post(
        "/v1/events", json=canonical_event, headers=tidings.producer
    )
    event_id = response.json()["event_id"]

    async def inbox(n: int) -> bool:
        return (await counts(runtime))["inbox_items"] == n

    await eventually(lambda: inbox(1), timeout=30)
    # Forget the planning, as if the planning job had been given up on.
    async with runtime.db.transaction() as conn:
        for table in (
            tables.deliveries,
            tables.delivery_transitions,
            tables.inbox_items,
        ):
            await conn.execute(table.delete())
        await conn.execute(
            tables.events.update().where(tables.events.c.id == event_id).values(planned_at=None)
        )
    payload = {"events": [event_id], "recipients": {event_id: ["u-bob"]}}
    await bury(runtime.db, Job(f"plan:{event_id}", "plan", payload, 2, 3))
    _k, operator_key = await runtime.auth.create_key("ops", ["admin"])
    replay = await tidings.client.post(
        f"/v1/dead-letters/plan:{event_id}/replay",
        headers={"Authorization": f"Bearer {operator_key}"},
    )
    assert replay.status_code == 200, replay.text
    await eventually(lambda: inbox(1), timeout=30)
    assert (await counts(runtime))["dead_letters"] == 0


# The CLI, on the embedded default.


def test_the_dlq_commands_list_show_replay_and_discard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIDINGS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TIDINGS_CATALOG", str(CATALOG))
    monkeypatch.delenv("TIDINGS_DATABASE_URL", raising=False)
    monkeypatch.setenv("TIDINGS_SECRET", "cli-secret-" + "x" * 32)
    settings = Settings()
    settings.data_dir.mkdir(parents=True)
    migrate.upgrade(settings.resolved_database_url)

    async def setup() -> None:
        db = Database(settings.resolved_database_url)
        try:
            await bury(
                db,
                Job("email:d-1", "email", {"delivery": "d-1", "user": "u-1"}, 1, 8),
                Job("plan:e-1", "plan", {"events": ["e-1"]}, 2, 8),
                Job("plan:e-2", "plan", {"events": ["e-2"]}, 2, 8),
                error="smtp: 451 later",
            )
        finally:
            await db.dispose()

    async def jobs() -> list[tuple[str, int]]:
        db = Database(settings.resolved_database_url)
        try:
            async with db.reader() as conn:
                rows = await conn.execute(sa.select(tables.jobs.c.id, tables.jobs.c.attempts))
                return sorted((r.id, r.attempts) for r in rows)
        finally:
            await db.dispose()

    asyncio.run(setup())
    runner = CliRunner()
    listed = runner.invoke(cli, ["dlq", "list"])
    assert listed.exit_code == 0, listed.output
    assert all(i in listed.stdout for i in ("email:d-1", "plan:e-1", "plan:e-2"))
    only = runner.invoke(cli, ["dlq", "list", "--kind", "email"])
    assert "email:d-1" in only.stdout
    assert "plan:e-1" not in only.stdout

    shown = runner.invoke(cli, ["dlq", "show", "email:d-1"])
    assert shown.exit_code == 0, shown.output
    row = json.loads(shown.stdout)
    assert row["payload"] == {"delivery": "d-1", "user": "u-1"}
    assert row["error"] == "smtp: 451 later"

    assert runner.invoke(cli, ["dlq", "replay", "email:d-1"]).exit_code == 0
    again = runner.invoke(cli, ["dlq", "replay", "email:d-1"])
    assert again.exit_code == 1
    assert "No dead letter" in again.output
    by_kind = runner.invoke(cli, ["dlq", "replay", "--kind", "plan"])
    assert by_kind.exit_code == 0, by_kind.output
    assert "replayed 2" in by_kind.stdout
    assert asyncio.run(jobs()) == [("email:d-1", 0), ("plan:e-1", 0), ("plan:e-2", 0)]

    assert runner.invoke(cli, ["dlq", "replay"]).exit_code == 1
    asyncio.run(setup())
    assert runner.invoke(cli, ["dlq", "discard", "plan:e-1"]).exit_code == 0
    assert runner.invoke(cli, ["dlq", "discard", "plan:e-1"]).exit_code == 1
    assert "plan:e-1" not in runner.invoke(cli, ["dlq", "list"]).stdout
