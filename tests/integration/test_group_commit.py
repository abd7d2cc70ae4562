"""Single events published at once are written in groups, several groups at a time on
PostgreSQL: each key still names one event, replays get its id, other bodies a 409."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import sqlalchemy as sa

from tidings.app.runtime import Runtime
from tidings.kit.tables import events


def event(key: str, text: str) -> dict[str, Any]:
    return {
        "type": "comment.created",
        "idempotency_key": key,
        "actor": {"id": "u-ann", "name": "Ann"},
        "recipients": ["u-bob"],
        "data": {"board": {"id": "b-1", "name": "Roadmap"}, "comment": {"id": "c", "text": text}},
    }


async def test_concurrent_requests_with_shared_keys_each_key_one_event(
    client: httpx.AsyncClient, runtime: Runtime, producer: dict[str, str]
) -> None:
    keys = [f"k-{n}" for n in range(12)]
    # Each key sent 8 times at once: 6 with one body, 2 with another.
    bodies = [(key, "same" if copy < 6 else f"other-{copy}") for key in keys for copy in range(8)]
    answers = await asyncio.gather(
        *(
            client.post("/v1/events", json=event(key, text), headers=producer)
            for key, text in bodies
        )
    )
    async with runtime.db.reader() as conn:
        stored = (await conn.execute(sa.select(events.c.idempotency_key, events.c.id))).all()
    assert sorted(k for k, _ in stored) == sorted(keys)
    event_of = dict(stored)
    for (key, _text), answer in zip(bodies, answers, strict=True):
        assert answer.status_code in (202, 409), answer.text
        body = answer.json()
        if answer.status_code == 202:
            assert body["event_id"] == event_of[key]
        else:
            assert body["error"]["code"] == "conflict"
            assert body["error"]["field"] == "idempotency_key"
    for key in keys:
        accepted = [
            a.json()
            for (k, _), a in zip(bodies, answers, strict=True)
            if k == key and a.status_code == 202
        ]
        assert [a["replayed"] for a in accepted].count(False) == 1
        # The winner's body is replayed; every other body is the conflict.
        assert len(accepted) in (6, 1)


async def test_groups_are_written_side_by_side_only_on_postgres(runtime: Runtime) -> None:
    expected = 1 if runtime.db.dialect == "sqlite" else 3
    assert runtime.events.concurrent_writers == expected
