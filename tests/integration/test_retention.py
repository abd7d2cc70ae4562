"""Retention: expired events, deliveries and inbox items are removed in small batches,
never what still has work to do; each inbox keeps its newest items up to the cap."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from tests.conftest import CATALOG
from tests.integration.noise_rig import START, Rig, rig, write_catalog
from tidings.cli import app as cli
from tidings.kit import tables
from tidings.kit.clock import FrozenClock
from tidings.kit.settings import Settings
from tidings.operations.retention import Policy


@pytest.fixture
async def noise(
    make_settings: Callable[..., Settings], database_url: str, tmp_path: Path
) -> AsyncIterator[Rig]:
    settings = make_settings(
        database_url=database_url,
        catalog=write_catalog(tmp_path / "catalog"),
        worker_enabled=False,
        retention_events_days=30,
        retention_deliveries_days=30,
        retention_inbox_days=60,
        inbox_max_items_per_user=0,
        # Smaller than what expires, so every step takes several batches.
        retention_batch_size=2,
    )
    async with rig(settings, FrozenClock(START)) as r:
        yield r


async def ids(noise: Rig, table: sa.Table, column: str = "id") -> set[str]:
    async with noise.runtime.db.reader() as conn:
        return {row[0] for row in await conn.execute(sa.select(table.c[column]))}


async def test_expired_records_go_and_pending_work_stays(noise: Rig) -> None:
    done = [
        await noise.publish("ping.plain", ["u-1", "u-2"], key=f"a{n}", ref="r") for n in range(3)
    ]
    held = await noise.publish("ping.delay", ["u-1"], key="b", ref="r")
    await noise.drain()
    waiting = await noise.publish("ping.plain", ["u-3"], key="c", ref="r")  # never planned
    inbox_before = await ids(noise, tables.inbox_items)
    assert len(inbox_before) == 6

    # A month later, without running the pipeline: the delay's timer has not fired.
    noise.clock.at = START + dt.timedelta(days=31)
    removed = await noise.runtime.retention.run_once()

    assert await ids(noise, tables.events) == {held, waiting}
    assert await ids(noise, tables.deliveries, "event_id") == {held}
    # Only deliveries that changed since they were planned have transitions logged.
    assert await ids(noise, tables.delivery_transitions, "delivery_id") <= await ids(
        noise, tables.deliveries
    )
    assert await ids(noise, tables.idempotency_keys, "event_id") == set()
    # Inbox items live longer than the events they came from.
    assert await ids(noise, tables.inbox_items) == inbox_before
    assert removed.events == 3
    # 3 events x 2 users x email: the in-app deliveries are their items, kept longer.
    assert removed.deliveries == 6
    # Email planned, scheduled, sent; in-app delivered when planned logs none.
    assert removed.transitions == 18
    assert removed.idempotency_keys == 5
    assert removed.inbox_items == 0
    assert done  # the three planned events are the ones gone

    assert (await noise.runtime.retention.run_once()).total == 0

    # The timer fires and the unplanned event is planned; a month on, they expire too,
    # and the first inbox items, two months old now, with them.
    await noise.drain()
    noise.clock.at = START + dt.timedelta(days=62)
    removed = await noise.runtime.retention.run_once()
    assert await ids(noise, tables.events) == set()
    assert await ids(noise, tables.deliveries) == set()
    assert await ids(noise, tables.delivery_transitions) == set()
    assert removed.inbox_items == 6
    async with noise.runtime.db.reader() as conn:
        left = (await conn.execute(sa.select(tables.inbox_items.c.event_id))).scalars().all()
    assert sorted(left) == sorted([held, waiting])


async def test_a_scheduled_delivery_is_never_expired_even_when_old(noise: Rig) -> None:
    await noise.publish("ping.delay", ["u-1"], key="b", ref="r")
    await noise.drain()
    noise.clock.at = START + dt.timedelta(days=400)
    removed = await noise.runtime.retention.run_once()
    assert (removed.events, removed.deliveries) == (0, 0)
    async with noise.runtime.db.reader() as conn:
        states = (await conn.execute(sa.select(tables.deliveries.c.state))).scalars().all()
    assert sorted(states) == ["scheduled", "scheduled"]


async def test_each_inbox_keeps_its_newest_items_up_to_the_cap(noise: Rig) -> None:
    for n in range(5):
        await noise.publish("ping.plain", ["u-1"], key=f"c{n}", ref=f"r{n}")
        await noise.publish("ping.plain", ["u-2"], key=f"d{n}", ref=f"r{n}")
        await noise.drain()
        noise.clock.at += dt.timedelta(minutes=1)
    newest = [item["id"] for item in await noise.inbox("u-1")][:3]
    noise.runtime.retention.policy = Policy(
        events=None, deliveries=None, inbox=None, inbox_max_items=3, batch_size=2
    )
    removed = await noise.runtime.retention.run_once()
    assert removed.inbox_over_cap == 4
    assert [item["id"] for item in await noise.inbox("u-1")] == newest
    assert len(await noise.inbox("u-2")) == 3
    assert removed.events == removed.deliveries == 0
    assert (await noise.runtime.retention.run_once()).total == 0


async def test_answered_webhook_messages_go_with_their_log_and_waiting_ones_stay(
    noise: Rig,
) -> None:
    old = START - dt.timedelta(days=40)
    rows = [
        {"id": f"m-{state}-{n}", "state": state}
        for state in ("succeeded", "failed", "pending")
        for n in range(3)
    ]
    async with noise.runtime.db.transaction() as conn:
        await conn.execute(
            sa.insert(tables.webhook_messages),
            [
                {
                    **row,
                    "endpoint_id": "e-1",
                    "msg_id": f"msg_{row['id']}",
                    "type": "delivery.updated",
                    "payload": {},
                    "attempts": 1,
                    "created_at": old,
                    "updated_at": old,
                }
                for row in rows
            ],
        )
        await conn.execute(
            sa.insert(tables.webhook_attempts),
            [{"id": f"a-{row['id']}", "message_id": row["id"], "at": old} for row in rows],
        )
    removed = await noise.runtime.retention.run_once()
    pending = {row["id"] for row in rows if row["state"] == "pending"}
    assert await ids(noise, tables.webhook_messages) == pending
    assert await ids(noise, tables.webhook_attempts, "message_id") == pending
    assert removed.webhook_messages == 6
    assert removed.webhook_attempts == 6


def test_zero_keeps_forever(make_settings: Callable[..., Settings]) -> None:
    policy = Policy.from_settings(
        make_settings(
            retention_events_days=0,
            retention_deliveries_days=7,
            retention_inbox_days=0,
            inbox_max_items_per_user=0,
        )
    )
    assert policy.events is None
    assert policy.inbox is None
    assert policy.inbox_max_items is None
    assert policy.deliveries == dt.timedelta(days=7)


def test_the_retention_command_runs_one_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIDINGS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TIDINGS_CATALOG", str(CATALOG))
    monkeypatch.setenv("TIDINGS_SECRET", "retention-secret-" + "x" * 32)
    monkeypatch.delenv("TIDINGS_DATABASE_URL", raising=False)
    result = CliRunner().invoke(cli, ["retention", "run"])
    assert result.exit_code == 0, result.output
    assert "events: 0" in result.stdout
    assert "inbox_over_cap: 0" in result.stdout
