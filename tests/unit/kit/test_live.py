from __future__ import annotations

from tidings.kit import live


async def test_every_connection_of_a_user_gets_the_message_and_no_one_else() -> None:
    hub = live.LocalHub()
    async with (
        hub.subscribe("u-bob") as first,
        hub.subscribe("u-bob") as second,
        hub.subscribe("u-eve") as other,
    ):
        assert hub.listening(["u-bob", "u-eve", "u-zed"]) == ["u-bob", "u-eve"]
        await hub.publish("u-bob", {"event": "item", "data": {"id": 1}})
        assert first.get_nowait() == second.get_nowait() == {"event": "item", "data": {"id": 1}}
        assert other.empty()
    assert hub.listening(["u-bob", "u-eve"]) == []
    assert hub.connections("u-bob") == 0


async def test_a_slow_connection_is_told_to_resync_instead_of_growing_without_bound() -> None:
    hub = live.LocalHub()
    async with hub.subscribe("u-bob") as queue:
        for n in range(live._QUEUE_LIMIT + 5):
            await hub.publish("u-bob", {"event": "item", "data": {"n": n}})
        assert queue.qsize() <= live._QUEUE_LIMIT
        messages = [queue.get_nowait() for _ in range(queue.qsize())]
        assert {"event": "resync", "data": {}} in messages
        assert messages[-1]["data"] == {"n": live._QUEUE_LIMIT + 4}
