"""The live hubs' contract: in-process, over NATS core subjects, over Redis pub/sub.

Each broker case runs two hubs with a connection each, as two processes would (an API
process holding the connections, a worker publishing), under a prefix of its own. The
in-process hub stands in for both. No test waits a fixed time: each publishes a last
*marker* message and reads until it arrives; the broker keeps one publisher's order on
the way to one subscriber, so whatever was going to arrive has arrived by then.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis.exceptions
from redis import asyncio as aioredis

from tests.conftest import eventually, fresh_database, service_missing
from tests.nats_cluster import NatsCluster, _free_ports
from tidings.backends import build_live_hub
from tidings.inbox.service import InboxService
from tidings.kit import live
from tidings.kit.clock import SystemClock
from tidings.kit.db import Database
from tidings.kit.live import RECOUNT, LocalHub
from tidings.kit.live_nats import NatsHub
from tidings.kit.live_redis import RedisHub
from tidings.kit.settings import Settings

NATS_URL = os.environ.get("TIDINGS_TEST_NATS_URL", "nats://127.0.0.1:4222")
REDIS_URL = os.environ.get("TIDINGS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
DELIVERY_TIMEOUT = 10.0
"""How long a message may take before the test gives up on it (not a latency bound)."""

ODD_IDS = [
    "u-bob",
    "a.b.c",
    "with space",
    "tab\tand\nnewline",
    "ünïcødé ✉ 名前",
    ">",
    "*",
    "a.*.>",
    "",
    "$SYS.x",
    "x" * 2000,
]

Hub = LocalHub | NatsHub | RedisHub
Queue = asyncio.Queue[dict[str, Any]]


@dataclass
class Pair:
    """Where connections are held (``listener``) and where a worker publishes."""

    listener: Hub
    publisher: Hub

    @property
    def brokered(self) -> bool:
        return not isinstance(self.listener, LocalHub)


def item(n: int, **extra: Any) -> dict[str, Any]:
    return {"event": "item", "data": {"n": n, **extra}}


def marker(tag: str) -> dict[str, Any]:
    return {"event": "marker", "data": {"tag": tag}}


async def next_message(queue: Queue) -> dict[str, Any]:
    try:
        return await asyncio.wait_for(queue.get(), DELIVERY_TIMEOUT)
    except TimeoutError:
        pytest.fail(f"no message within {DELIVERY_TIMEOUT}s")


async def until_marker(queue: Queue, tag: str) -> list[dict[str, Any]]:
    """Everything the queue got before the marker ``tag``."""
    before: list[dict[str, Any]] = []
    while (message := await next_message(queue)) != marker(tag):
        before.append(message)
    return before


async def nats_hub(prefix: str, servers: list[str] | None = None) -> NatsHub:
    hub = NatsHub(servers or [NATS_URL], prefix, connect_wait=10.0)
    await hub.start()
    if not hub.connected:
        await hub.close()
        service_missing(f"NATS at {NATS_URL}", ConnectionError("no connection in 10s"))
    return hub


async def redis_hub(prefix: str) -> RedisHub:
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        await client.ping()
    except (redis.exceptions.RedisError, OSError) as exc:
        service_missing(f"Redis at {REDIS_URL}", exc)
    finally:
        await client.aclose()
    hub = RedisHub(REDIS_URL, prefix)
    await hub.start()
    return hub


@pytest.fixture(params=["local", "nats", "redis"])
async def pair(request: pytest.FixtureRequest) -> AsyncIterator[Pair]:
    """Two hubs that share a broker (or one in-process hub), under a fresh prefix."""
    prefix = f"t{uuid.uuid4().hex[:12]}"
    hubs: list[Hub] = []
    try:
        if request.param == "local":
            local = LocalHub()
            yield Pair(local, local)
            return
        make = nats_hub if request.param == "nats" else redis_hub
        hubs.append(await make(prefix))
        hubs.append(await make(prefix))
        yield Pair(hubs[0], hubs[1])
    finally:
        for hub in hubs:
            await hub.close()


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
            # Exactly its own message: nothing of the others' (">" and "*" included).
            assert await until_marker(queue, "end") == [item(n, user=user_id)], user_id


async def test_each_connection_of_a_user_gets_it_and_another_prefix_hears_nothing(
    pair: Pair,
) -> None:
    async with (
        pair.listener.subscribe("u-bob") as first,
        pair.listener.subscribe("u-bob") as second,
        pair.listener.subscribe("u-eve") as eve,
    ):
        await pair.publisher.publish("u-bob", item(1))
        await pair.publisher.publish("u-bob", marker("end"))
        await pair.publisher.publish("u-eve", marker("end"))
        assert await until_marker(first, "end") == [item(1)]
        assert await until_marker(second, "end") == [item(1)]
        assert await until_marker(eve, "end") == []
        if isinstance(pair.listener, NatsHub | RedisHub):
            # The same user under another prefix (another deployment on the same broker).
            other = await _same_kind(pair.listener, f"t{uuid.uuid4().hex[:12]}")
            try:
                async with other.subscribe("u-bob") as elsewhere:
                    await pair.publisher.publish("u-bob", item(2))
                    # The broker has handled item 2 once it reaches a listener here; had
                    # it been bound for ``other`` too, it would be ahead of the marker.
                    assert await next_message(first) == item(2)
                    await other.publish("u-bob", marker("own"))
                    assert await until_marker(elsewhere, "own") == []
            finally:
                await other.close()


async def _same_kind(hub: NatsHub | RedisHub, prefix: str) -> NatsHub | RedisHub:
    return await (nats_hub(prefix) if isinstance(hub, NatsHub) else redis_hub(prefix))


async def test_a_slow_connection_is_told_to_resync_and_keeps_the_newest(pair: Pair) -> None:
    last = live._QUEUE_LIMIT + 4
    async with (
        pair.listener.subscribe("u-bob") as slow,
        pair.listener.subscribe("u-bob") as reader,
    ):
        for n in range(last + 1):
            await pair.publisher.publish("u-bob", item(n))
        # Both connections are fed by the same delivery: once the reader has the last
        # message, so has the slow one, which read nothing meanwhile.
        while (await next_message(reader))["data"] != {"n": last}:
            pass
        assert slow.qsize() <= live._QUEUE_LIMIT
        messages = [slow.get_nowait() for _ in range(slow.qsize())]
        assert {"event": "resync", "data": {}} in messages
        assert messages[-1] == item(last)


async def test_a_closed_connection_hears_nothing_more_and_the_broker_stops_sending(
    pair: Pair,
) -> None:
    async with pair.listener.subscribe("u-eve") as eve:
        async with pair.listener.subscribe("u-bob") as open_longer:
            async with pair.listener.subscribe("u-bob") as closed:
                await pair.publisher.publish("u-bob", item(1))
                assert await next_message(closed) == item(1)
                assert await next_message(open_longer) == item(1)
            await pair.publisher.publish("u-bob", item(2))
            assert await next_message(open_longer) == item(2)
            assert closed.empty()
        assert pair.listener.connections("u-bob") == 0
        # A new user's subscription is confirmed after u-bob's was dropped: the broker
        # has handled the drop by then.
        async with pair.listener.subscribe("u-zed"):
            pass
        before = _received(pair.listener)
        await pair.publisher.publish("u-bob", item(3))
        await pair.publisher.publish("u-eve", marker("end"))
        assert await until_marker(eve, "end") == []
        assert closed.empty()
        assert open_longer.empty()
        if pair.brokered:
            # Only the marker came: with no connection of u-bob's here, the broker no
            # longer sends u-bob's messages to this process at all.
            assert _received(pair.listener) == before + 1


def _received(hub: Hub) -> int:
    return 0 if isinstance(hub, LocalHub) else hub.received


async def test_connections_coming_and_going_quickly_leave_the_subscription_right(
    pair: Pair,
) -> None:
    async def churn() -> None:
        for _ in range(10):
            async with pair.listener.subscribe("u-bob"):
                pass

    # Several at once, so a subscribe meets an unsubscribe the broker has not answered.
    await asyncio.gather(*(churn() for _ in range(5)))
    async with (
        pair.listener.subscribe("u-bob") as bob,
        pair.listener.subscribe("u-eve") as eve,
    ):
        async with pair.listener.subscribe("u-eve"):
            pass
        await pair.publisher.publish("u-bob", item(1))
        await pair.publisher.publish("u-eve", item(2))
        assert await next_message(bob) == item(1)
        assert await next_message(eve) == item(2)


async def test_every_hub_says_everyone_may_be_listening_except_the_local_one(
    pair: Pair,
) -> None:
    async with pair.listener.subscribe("u-bob"):
        listening = pair.listener.listening(["u-bob", "u-eve"])
    assert listening == (["u-bob", "u-eve"] if pair.brokered else ["u-bob"])
    assert pair.listener.spans_processes is pair.brokered


async def test_across_processes_the_writer_asks_for_a_recount_instead_of_counting(
    pair: Pair, tmp_path: Path
) -> None:
    """Announcing new items through a hub that spans processes sends the item and a
    recount request (the process holding the connection counts); through the local hub,
    which knows who listens, the counts themselves."""
    item = {
        "id": "i-1",
        "user_id": "u-bob",
        "event_id": "e-1",
        "type": "comment.created",
        "category": "comments",
        "title": "Ann commented",
        "body": "Looks good",
        "action_url": "/boards/b-1",
        "actor": None,
        "created_at": dt.datetime(2026, 11, 27, tzinfo=dt.UTC),
        "updated_at": dt.datetime(2026, 11, 27, tzinfo=dt.UTC),
    }
    async with fresh_database("sqlite", tmp_path) as url:
        db = Database(url)
        inbox = InboxService(db, SystemClock(), pair.publisher)
        try:
            async with pair.listener.subscribe("u-bob") as queue:
                await inbox.announce([item])
                first = await asyncio.wait_for(queue.get(), 5)
                second = await asyncio.wait_for(queue.get(), 5)
        finally:
            await db.dispose()
    assert first["event"] == "item"
    assert first["data"]["id"] == "i-1"
    if pair.brokered:
        assert second == {"event": RECOUNT, "data": {}}
    else:
        assert second["event"] == "counts"


# -- no broker --------------------------------------------------------------------


async def test_a_nats_hub_without_a_connection_drops_what_it_is_given_and_closes_cleanly() -> None:
    never_started = NatsHub([NATS_URL], "tnever")
    await never_started.publish("u-bob", item(1))
    async with never_started.subscribe("u-bob") as queue:
        assert queue.empty()
    await never_started.close()

    (port,) = _free_ports(1)
    unreachable = NatsHub([f"nats://127.0.0.1:{port}"], "tgone", connect_wait=0.5)
    await unreachable.start()
    assert not unreachable.connected
    await unreachable.publish("u-bob", item(1))
    async with unreachable.subscribe("u-bob") as queue:
        await unreachable.publish("u-bob", item(2))
        assert queue.empty()
    await unreachable.close()


async def test_a_redis_hub_without_redis_drops_what_it_is_given_and_closes_cleanly() -> None:
    (port,) = _free_ports(1)
    hub = RedisHub(f"redis://127.0.0.1:{port}/0", "tgone")
    await hub.start()
    await hub.publish("u-bob", item(1))
    async with hub.subscribe("u-bob") as queue:
        await hub.publish("u-bob", item(2))
        assert queue.empty()
    await hub.close()


async def test_the_settings_choose_the_hub(tmp_path: Path) -> None:
    choices: list[dict[str, Any]] = [
        {},
        {"live_backend": "nats", "nats_url": "nats://a:4222, nats://b:4222"},
        {"live_backend": "redis"},
    ]
    chosen = [build_live_hub(Settings(data_dir=tmp_path, **values)) for values in choices]
    try:
        assert [type(hub) for hub in chosen] == [LocalHub, NatsHub, RedisHub]
        nats_hub = chosen[1]
        assert isinstance(nats_hub, NatsHub)
        assert nats_hub.subject("u-bob").startswith("tidings.live.")
    finally:
        for hub in chosen:
            await hub.close()


# -- a NATS server going away and coming back ---------------------------------------


@pytest.fixture
def single_nats(tmp_path: Path) -> Iterator[NatsCluster]:
    with NatsCluster(size=1, base_dir=tmp_path / "nats") as cluster:
        yield cluster


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    with NatsCluster(size=3, base_dir=tmp_path / "nats") as cluster:
        yield cluster


async def deliver_eventually(publisher: Hub, user_id: str, queue: Queue, tag: str) -> None:
    """Publish until a message arrives: just after a reconnect the subscription may
    still be on its way to the server, and what is published before is dropped."""

    async def arrived() -> bool:
        await publisher.publish(user_id, marker(tag))
        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(queue.get(), 0.2) == marker(tag)
        return False

    await eventually(arrived, timeout=30.0)


async def until_marker_after(publisher: Hub, user_id: str, queue: Queue) -> list[dict[str, Any]]:
    """What the queue gets up to a marker published now, without the markers that
    ``deliver_eventually`` may have left on their way."""
    await publisher.publish(user_id, marker("end"))
    return [m for m in await until_marker(queue, "end") if m["event"] != "marker"]


async def test_subscriptions_survive_the_nats_server_restarting(
    single_nats: NatsCluster,
) -> None:
    """Also a subscription made while the server is down (the client buffers it)."""
    listener = await nats_hub("trestart", single_nats.urls)
    publisher = await nats_hub("trestart", single_nats.urls)
    try:
        async with listener.subscribe("u-bob") as bob:
            single_nats.kill(0)

            async def disconnected() -> bool:
                return not listener.connected and not publisher.connected

            await eventually(disconnected, timeout=30.0)
            async with listener.subscribe("u-eve") as eve:
                await publisher.publish("u-bob", item(1))  # buffered or dropped: no crash
                await asyncio.to_thread(single_nats.start, 0)
                await deliver_eventually(publisher, "u-bob", bob, "bob")
                await deliver_eventually(publisher, "u-eve", eve, "eve")
                await publisher.publish("u-eve", item(2))
                await publisher.publish("u-bob", item(3))
                assert await until_marker_after(publisher, "u-bob", bob) == [item(3)]
                assert await until_marker_after(publisher, "u-eve", eve) == [item(2)]
    finally:
        await listener.close()
        await publisher.close()


async def test_a_user_is_heard_across_cluster_nodes_and_after_its_node_dies(
    nats_cluster: NatsCluster,
) -> None:
    """Interest travels between routed servers; a client whose server dies moves to
    another (learned from the cluster) and takes its subscriptions along."""
    first, second, _third = nats_cluster.urls
    listener = await nats_hub("tcluster", [first])
    publisher = await nats_hub("tcluster", [second])
    try:
        async with listener.subscribe("u-bob") as bob, listener.subscribe("u-eve") as eve:
            # The servers tell each other about a new subscription on their own time:
            # the first message across them is retried until the interest has arrived.
            await deliver_eventually(publisher, "u-bob", bob, "before")
            await publisher.publish("u-bob", item(1))
            assert await until_marker_after(publisher, "u-bob", bob) == [item(1)]
            nats_cluster.kill(0)
            await deliver_eventually(publisher, "u-bob", bob, "after")
            await deliver_eventually(publisher, "u-eve", eve, "after")
            assert listener.connected
            await publisher.publish("u-eve", item(2))
            assert await until_marker_after(publisher, "u-eve", eve) == [item(2)]
    finally:
        await listener.close()
        await publisher.close()
