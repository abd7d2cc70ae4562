"""The PostgreSQL live hub: two hubs on one database, as an API process holding the
connections and a worker publishing would be. As in test_live_hubs.py, no test waits a
fixed time: each publishes a last marker and reads until it arrives."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import pytest

from tests.conftest import create_pg_database, drop_pg_database, eventually, pg_url
from tests.integration.test_live_hubs import ODD_IDS, item, marker, next_message, until_marker
from tidings.kit.live import RESYNC
from tidings.kit.live_postgres import LISTENER, MAX_PAYLOAD, PostgresHub, asyncpg_dsn


@dataclass
class Pair:
    listener: PostgresHub
    publisher: PostgresHub
    url: str


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    name = await create_pg_database()
    url = pg_url(name)
    hubs = [PostgresHub(url), PostgresHub(url)]
    try:
        for hub in hubs:
            await hub.start()
        yield Pair(hubs[0], hubs[1], url)
    finally:
        for hub in hubs:
            await hub.close()
        await drop_pg_database(name)


async def test_a_connection_on_one_hub_hears_what_another_publishes_for_any_user_id(
    pair: Pair,
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        queues = [await stack.enter_async_context(pair.listener.subscribe(u)) for u in ODD_IDS]
        for n, user_id in enumerate(ODD_IDS):
            await pair.publisher.publish(user_id, item(n, user=user_id))
        for user_id in ODD_IDS:
            await pair.publisher.publish(user_id, marker("end"))
        for n, (user_id, queue) in enumerate(zip(ODD_IDS, queues, strict=True)):
            assert await until_marker(queue, "end") == [item(n, user=user_id)], user_id


async def test_messages_keep_their_order_and_reach_every_connection_of_the_user(
    pair: Pair,
) -> None:
    async with (
        pair.listener.subscribe("u-bob") as first,
        pair.listener.subscribe("u-bob") as second,
        pair.listener.subscribe("u-eve") as eve,
    ):
        for n in range(300):
            await pair.publisher.publish("u-bob", item(n))
        await pair.publisher.publish("u-bob", marker("end"))
        await pair.publisher.publish("u-eve", marker("end"))
        assert await until_marker(first, "end") == [item(n) for n in range(300)]
        assert await until_marker(second, "end") == [item(n) for n in range(300)]
        assert await until_marker(eve, "end") == []


async def test_a_message_too_large_for_a_notification_arrives_as_resync(pair: Pair) -> None:
    async with pair.listener.subscribe("u-bob") as queue:
        await pair.publisher.publish("u-bob", item(1, body="x" * MAX_PAYLOAD))
        await pair.publisher.publish("u-bob", item(2))
        await pair.publisher.publish("u-bob", marker("end"))
        assert await until_marker(queue, "end") == [{"event": RESYNC, "data": {}}, item(2)]


async def test_a_listener_that_lost_its_connection_comes_back_and_tells_streams_to_resync(
    pair: Pair,
) -> None:
    async with pair.listener.subscribe("u-bob") as queue:
        admin = await asyncpg.connect(asyncpg_dsn(pair.url))
        try:
            # The server drops the listener's connection.
            ended = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE pid <> pg_backend_pid() AND datname = current_database() "
                "AND application_name = $1",
                LISTENER,
            )
        finally:
            await admin.close()
        assert ended >= 1
        assert await next_message(queue) == {"event": RESYNC, "data": {}}

        async def heard() -> bool:
            await pair.publisher.publish("u-bob", marker("back"))
            while not queue.empty():
                if queue.get_nowait() == marker("back"):
                    return True
            return False

        await eventually(heard, timeout=15)
