"""Noise control end to end: every rule decides, records why, and its timers fire."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from tests.integration.noise_rig import START, Rig, rig, write_catalog
from tidings.kit import tables
from tidings.kit.clock import FrozenClock
from tidings.kit.queue import NewJob
from tidings.kit.settings import Settings


def state(delivery: dict[str, Any]) -> tuple[str, str | None]:
    return delivery["state"], delivery["reason"]


async def test_a_second_event_with_the_same_dedup_key_is_deduplicated(noise: Rig) -> None:
    first = await noise.publish("ping.dedup", ["u-1", "u-2"], key="e1", ref="r-1")
    await noise.drain()
    await noise.advance(minutes=5)
    second = await noise.publish("ping.dedup", ["u-1"], key="e2", ref="r-1")
    other = await noise.publish("ping.dedup", ["u-1"], key="e3", ref="r-2")
    await noise.drain()

    assert state((await noise.deliveries(first))[("u-1", "in_app")]) == ("delivered", None)
    seconds = await noise.deliveries(second)
    assert state(seconds[("u-1", "in_app")]) == ("suppressed", "deduplicated")
    assert state(seconds[("u-1", "email")]) == ("suppressed", "deduplicated")
    assert state((await noise.deliveries(other))[("u-1", "in_app")]) == ("delivered", None)

    # The window counts from the first event: at 11 minutes it is over.
    await noise.advance(minutes=6)
    third = await noise.publish("ping.dedup", ["u-1"], key="e4", ref="r-1")
    await noise.drain()
    assert state((await noise.deliveries(third))[("u-1", "in_app")]) == ("delivered", None)
    assert len(await noise.inbox("u-1")) == 3


async def test_a_throttle_drops_what_goes_over_its_cap(noise: Rig) -> None:
    sent = [
        await noise.publish("ping.throttle", ["u-1"], key=f"t{i}", ref=f"r{i}") for i in range(4)
    ]
    await noise.drain()
    outcomes = [state((await noise.deliveries(e))[("u-1", "in_app")]) for e in sent]
    assert outcomes == [("delivered", None)] * 2 + [("suppressed", "throttled")] * 2
    assert len(await noise.mail_to("u-1")) == 2
    assert len(await noise.inbox("u-1")) == 2

    # An hour later the window has slid past the first two.
    await noise.advance(hours=1, seconds=1)
    later = await noise.publish("ping.throttle", ["u-1"], key="t9", ref="r9")
    await noise.drain()
    assert state((await noise.deliveries(later))[("u-1", "in_app")]) == ("delivered", None)


async def test_a_throttle_can_fold_the_excess_into_the_next_digest(noise: Rig) -> None:
    sent = [await noise.publish("ping.fold", ["u-1"], key=f"f{i}", ref=f"r{i}") for i in range(3)]
    await noise.drain()
    first, *held = [await noise.deliveries(e) for e in sent]
    assert state(first[("u-1", "in_app")]) == ("delivered", None)
    for deliveries in held:
        assert state(deliveries[("u-1", "in_app")]) == ("scheduled", "throttled")
        assert state(deliveries[("u-1", "email")]) == ("scheduled", "throttled")

    await noise.advance(hours=1)
    for deliveries in [await noise.deliveries(e) for e in sent[1:]]:
        assert deliveries[("u-1", "in_app")]["state"] == "digested"
    items = await noise.inbox("u-1")
    assert len(items) == 2
    assert "2" in items[0]["title"]
    assert len(await noise.mail_to("u-1")) == 2  # the first ping, then the digest


async def test_a_digest_gathers_a_window_and_sends_it_once(noise: Rig) -> None:
    on_roadmap = [
        await noise.publish("ping.digest", ["u-1"], key=f"d{i}", ref=f"r{i}", board="roadmap")
        for i in range(5)
    ]
    elsewhere = await noise.publish("ping.digest", ["u-1"], key="dx", ref="rx", board="infra")
    await noise.drain()
    assert await noise.inbox("u-1") == []
    assert state((await noise.deliveries(on_roadmap[0]))[("u-1", "email")]) == (
        "scheduled",
        "digest",
    )

    await noise.advance(hours=1)
    titles = sorted(item["title"] for item in await noise.inbox("u-1"))
    assert titles == ["1 pings on infra", "5 pings on roadmap"]
    mail = await noise.mail_to("u-1")
    assert sorted(mail) == ["1 pings on infra", "5 pings on roadmap"]
    for event_id in [*on_roadmap, elsewhere]:
        deliveries = await noise.deliveries(event_id)
        assert {d["state"] for key, d in deliveries.items() if key[0] == "u-1"} <= {
            "digested",
            "delivered",
            "sent",
        }

    # The timer again, as if redelivered after its commit: nothing is sent twice.
    async with noise.runtime.db.reader() as conn:
        entry = (await conn.execute(sa.select(tables.digest_entries).limit(1))).one()
    async with noise.runtime.db.transaction() as conn:
        await noise.runtime.queue.enqueue(
            conn,
            [
                NewJob(
                    id="digest:again",
                    kind="digest",
                    payload={"user": "u-1", "key": entry.digest_key},
                )
            ],
        )
    await noise.drain()
    assert len(await noise.inbox("u-1")) == 2
    assert len(await noise.mail_to("u-1")) == 2


async def test_the_digest_email_lists_the_first_items_and_counts_the_rest(noise: Rig) -> None:
    for i in range(4):
        await noise.publish("ping.digest", ["u-1"], key=f"d{i}", ref=f"r{i}", board="roadmap")
    await noise.drain()
    await noise.advance(hours=1)
    async with noise.runtime.db.reader() as conn:
        raw = (await conn.execute(sa.select(tables.mailbox.c.raw))).scalar_one()
    assert "and 2 more" in raw


async def test_quiet_hours_defer_email_to_their_end_in_local_time(noise: Rig) -> None:
    response = await noise.client.put(
        "/v1/users/u-1/preferences",
        json={"quiet_hours": {"start": "12:30", "end": "14:00", "timezone": "Europe/Paris"}},
        headers=noise.producer,
    )
    assert response.status_code == 200, response.text
    # 13:00 in Paris: quiet.
    plain = await noise.publish("ping.plain", ["u-1"], key="q1", ref="r1")
    urgent = await noise.publish("ping.critical", ["u-1"], key="q2", ref="r2")
    await noise.drain()

    assert (await noise.deliveries(urgent))[("u-1", "email")]["state"] == "sent"
    held = (await noise.deliveries(plain))[("u-1", "email")]
    assert state(held) == ("scheduled", "quiet_hours")
    assert held["detail"] == "until 2026-01-10T13:00:00+00:00"  # 14:00 in Paris
    assert state((await noise.deliveries(plain))[("u-1", "in_app")]) == ("delivered", None)
    assert await noise.mail_to("u-1") == ["Ping r2"]  # critical goes through

    await noise.advance(minutes=59)
    assert await noise.mail_to("u-1") == ["Ping r2"]
    await noise.advance(minutes=1)
    assert await noise.mail_to("u-1") == ["Ping r2", "Ping r1"]


async def test_a_delay_holds_every_channel(noise: Rig) -> None:
    event_id = await noise.publish("ping.delay", ["u-1"], key="w1", ref="r1")
    await noise.drain()
    deliveries = await noise.deliveries(event_id)
    assert state(deliveries[("u-1", "in_app")]) == ("scheduled", "delayed")
    assert await noise.inbox("u-1") == []
    assert await noise.mail_to("u-1") == []

    await noise.advance(minutes=5)
    assert [i["body"] for i in await noise.inbox("u-1")] == ["ref r1"]
    assert await noise.mail_to("u-1") == ["Ping r1"]
    assert state((await noise.deliveries(event_id))[("u-1", "in_app")]) == ("delivered", None)


async def test_email_if_unseen_sends_only_to_those_who_did_not_look(noise: Rig) -> None:
    event_id = await noise.publish("ping.unseen", ["u-1", "u-2"], key="s1", ref="r1")
    await noise.drain()
    assert state((await noise.deliveries(event_id))[("u-1", "email")]) == (
        "scheduled",
        "waiting_unseen",
    )
    item = (await noise.inbox("u-1"))[0]
    response = await noise.client.patch(
        f"/v1/me/inbox/{item['id']}", json={"seen": True}, headers=noise.user_headers("u-1")
    )
    assert response.status_code == 200, response.text

    await noise.advance(minutes=15)
    deliveries = await noise.deliveries(event_id)
    assert state(deliveries[("u-1", "email")]) == ("suppressed", "seen_in_app")
    assert deliveries[("u-2", "email")]["state"] == "sent"
    assert await noise.mail_to("u-1") == []
    assert await noise.mail_to("u-2") == ["Ping r1"]


async def test_an_event_too_old_when_its_turn_comes_is_dropped_as_stale(noise: Rig) -> None:
    event_id = await noise.publish("ping.stale", ["u-1"], key="o1", ref="r1")
    # A backlog held it for 11 minutes: older than the type's max age.
    noise.clock.advance(11 * 60)
    await noise.drain()
    deliveries = await noise.deliveries(event_id)
    assert state(deliveries[("u-1", "in_app")]) == ("suppressed", "stale")
    assert state(deliveries[("u-1", "email")]) == ("suppressed", "stale")
    assert await noise.inbox("u-1") == []


async def test_a_deferred_email_that_became_stale_is_not_sent_late(noise: Rig) -> None:
    response = await noise.client.put(
        "/v1/users/u-1/preferences",
        json={"quiet_hours": {"start": "12:30", "end": "14:00", "timezone": "Europe/Paris"}},
        headers=noise.producer,
    )
    assert response.status_code == 200, response.text
    event_id = await noise.publish("ping.stale", ["u-1"], key="o2", ref="r2")
    await noise.drain()
    assert state((await noise.deliveries(event_id))[("u-1", "email")]) == (
        "scheduled",
        "quiet_hours",
    )
    await noise.advance(hours=1)
    assert state((await noise.deliveries(event_id))[("u-1", "email")]) == ("suppressed", "stale")
    assert await noise.mail_to("u-1") == []


async def test_collapsing_merges_a_group_into_the_newest_unread_item(noise: Rig) -> None:
    for i, actor in enumerate(["Ann", "Bob", "Cid"]):
        await noise.publish("ping.collapse", ["u-1"], key=f"c{i}", actor=actor, board="roadmap")
        await noise.advance(seconds=1)
    await noise.publish("ping.collapse", ["u-1"], key="c9", actor="Dee", board="infra")
    await noise.advance(seconds=1)

    items = await noise.inbox("u-1")
    assert len(items) == 2
    roadmap = next(i for i in items if "roadmap" in i["title"])
    assert roadmap["title"] == "Cid and 2 others pinged roadmap"
    assert roadmap["group"]["count"] == 3
    assert [a["name"] for a in roadmap["group"]["actors"]] == ["Cid", "Bob", "Ann"]

    # Once read, the group is closed: the next event starts a new item.
    response = await noise.client.patch(
        f"/v1/me/inbox/{roadmap['id']}", json={"read": True}, headers=noise.user_headers("u-1")
    )
    assert response.status_code == 200, response.text
    await noise.publish("ping.collapse", ["u-1"], key="c10", actor="Eve", board="roadmap")
    await noise.advance(seconds=1)
    titles = [i["title"] for i in await noise.inbox("u-1")]
    assert titles[0] == "Eve pinged roadmap"
    assert len(titles) == 3


async def test_collapsing_within_one_batch(noise: Rig) -> None:
    events = [
        {
            "type": "ping.collapse",
            "idempotency_key": f"b{i}",
            "actor": {"id": f"a-{name}", "name": name},
            "recipients": [{"id": "u-1"}],
            "data": {"board": "roadmap"},
        }
        for i, name in enumerate(["Ann", "Bob", "Ann"])
    ]
    response = await noise.client.post(
        "/v1/events/batch", json={"events": events}, headers=noise.producer
    )
    assert response.status_code == 202, response.text
    await noise.drain()
    items = await noise.inbox("u-1")
    assert len(items) == 1
    assert items[0]["title"] == "Ann and 1 others pinged roadmap"
    assert items[0]["group"]["count"] == 3


async def test_opting_out_is_recorded_and_mandatory_categories_still_arrive(noise: Rig) -> None:
    response = await noise.client.put(
        "/v1/users/u-1/preferences", json={"channels": {"email": False}}, headers=noise.producer
    )
    assert response.status_code == 200, response.text
    plain = await noise.publish("ping.plain", ["u-1"], key="p1", ref="r1")
    urgent = await noise.publish("ping.critical", ["u-1"], key="p2", ref="r2")
    await noise.drain()
    assert state((await noise.deliveries(plain))[("u-1", "email")]) == ("suppressed", "opted_out")
    assert (await noise.deliveries(urgent))[("u-1", "email")]["state"] == "sent"


async def test_a_daily_digest_preference_gathers_email_until_the_local_hour(noise: Rig) -> None:
    response = await noise.client.put(
        "/v1/users/u-1/preferences",
        json={"categories": {"updates": {"digest": {"cadence": "daily", "hour": 8}}}},
        headers=noise.producer,
    )
    assert response.status_code == 200, response.text
    response = await noise.client.put(
        "/v1/users/u-1",
        json={"email": "u-1@example.com", "timezone": "America/New_York"},
        headers=noise.producer,
    )
    assert response.status_code == 200, response.text
    first = await noise.publish("ping.plain", ["u-1"], key="n1", ref="r1")
    await noise.publish("ping.plain", ["u-1"], key="n2", ref="r2")
    await noise.drain()
    deliveries = await noise.deliveries(first)
    assert state(deliveries[("u-1", "in_app")]) == ("delivered", None)
    assert state(deliveries[("u-1", "email")]) == ("scheduled", "digest")
    assert await noise.mail_to("u-1") == []

    # Now 07:00 in New York; the digest is due at 08:00 there.
    await noise.advance(minutes=59)
    assert await noise.mail_to("u-1") == []
    await noise.advance(minutes=1)
    assert len(await noise.mail_to("u-1")) == 1


async def test_a_plan_job_run_again_after_its_commit_decides_nothing_new(noise: Rig) -> None:
    """Stateful rules would decide differently the second time (the dedup mark now
    exists, the throttle has counted): a rerun must leave everything as it was."""
    first = await noise.publish("ping.dedup", ["u-1"], key="r1", ref="same")
    throttled = [
        await noise.publish("ping.throttle", ["u-1"], key=f"r{i}", ref="x") for i in range(2, 4)
    ]
    await noise.drain()
    before = {e: await noise.deliveries(e) for e in [first, *throttled]}

    async with noise.runtime.db.transaction() as conn:
        await noise.runtime.queue.enqueue(
            conn,
            [NewJob(id="plan:again", kind="plan", payload={"events": [first, *throttled]})],
        )
    await noise.drain()
    assert {e: await noise.deliveries(e) for e in [first, *throttled]} == before
    assert len(await noise.inbox("u-1")) == 3


async def test_a_digest_drops_what_went_stale_while_it_gathered(noise: Rig) -> None:
    early = await noise.publish("ping.brief", ["u-1"], key="b1", ref="r1")
    await noise.advance(minutes=40)
    late = await noise.publish("ping.brief", ["u-1"], key="b2", ref="r2")
    await noise.drain()
    await noise.advance(minutes=20)  # the window ends: the first is 60 minutes old

    assert state((await noise.deliveries(early))[("u-1", "in_app")]) == ("suppressed", "stale")
    assert (await noise.deliveries(late))[("u-1", "in_app")]["state"] == "digested"
    assert [i["title"] for i in await noise.inbox("u-1")] == ["1 brief pings"]


async def test_an_email_waiting_on_a_held_item_checks_the_item_it_merged_into(
    noise: Rig,
) -> None:
    first = await noise.publish("ping.later", ["u-1"], key="l1", board="roadmap")
    await noise.drain()
    await noise.advance(minutes=5)
    second = await noise.publish("ping.later", ["u-1"], key="l2", board="roadmap")
    await noise.drain()
    await noise.advance(minutes=5)
    (item,) = await noise.inbox("u-1")
    assert item["title"] == "2 pings on roadmap"
    held = (await noise.deliveries(second))[("u-1", "in_app")]
    assert held["detail"] == f"collapsed into {item['id']}"
    response = await noise.client.patch(
        f"/v1/me/inbox/{item['id']}", json={"seen": True}, headers=noise.user_headers("u-1")
    )
    assert response.status_code == 200, response.text

    await noise.advance(minutes=15)
    for event_id in (first, second):
        email = (await noise.deliveries(event_id))[("u-1", "email")]
        assert state(email) == ("suppressed", "seen_in_app")
    assert await noise.mail_to("u-1") == []


async def test_a_digest_survives_a_restart(
    make_settings: Callable[..., Settings], database_url: str, tmp_path: Path
) -> None:
    settings = make_settings(
        database_url=database_url,
        catalog=write_catalog(tmp_path / "catalog"),
        worker_enabled=False,
    )
    clock = FrozenClock(START)
    async with rig(settings, clock) as before:
        for i in range(3):
            await before.publish("ping.digest", ["u-1"], key=f"r{i}", ref=f"r{i}", board="b")
        await before.drain()
    # A new process on the same database, after the window ended.
    clock.advance(3600)
    async with rig(settings, clock) as after:
        await after.drain()
        assert [i["title"] for i in await after.inbox("u-1")] == ["3 pings on b"]
        assert await after.mail_to("u-1") == ["3 pings on b"]
