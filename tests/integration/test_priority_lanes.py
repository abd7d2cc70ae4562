"""Priority lanes: a critical event goes out while a low-priority backlog still waits."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import yaml

from tests.conftest import CATALOG, eventually
from tidings.app.runtime import Runtime
from tidings.kit import tables
from tidings.kit.settings import Settings

TIP = "tip.published"
TIP_TYPE: dict[str, Any] = {
    "key": TIP,
    "category": "tips",
    "priority": "low",
    "description": "A tip about a feature the recipient has not tried yet.",
    "schema": {"type": "object", "required": ["tip"], "properties": {"tip": {"type": "string"}}},
    "example": {"tip": "Press ? to see every shortcut."},
    "channels": {"in_app": {"title": "A tip for you", "body": "{{ data.tip }}"}},
}
BACKLOG_REQUESTS = 20
EVENTS_PER_REQUEST = 1000


@pytest.fixture
def lanes_catalog(tmp_path: Path) -> Path:
    """The example catalog plus a low-priority type."""
    folder = tmp_path / "catalog"
    shutil.copytree(CATALOG, folder)
    categories_file = folder / "categories.yaml"
    categories = yaml.safe_load(categories_file.read_text())
    categories["categories"]["tips"] = {"description": "Tips about features.", "mandatory": False}
    categories_file.write_text(yaml.safe_dump(categories))
    (folder / f"{TIP}.yaml").write_text(yaml.safe_dump(TIP_TYPE, sort_keys=False))
    return folder


@pytest.fixture
def settings(
    make_settings: Callable[..., Settings], database_url: str, lanes_catalog: Path
) -> Settings:
    return make_settings(database_url=database_url, catalog=lanes_catalog)


async def unplanned_tips(runtime: Runtime) -> int:
    async with runtime.db.reader() as conn:
        query = (
            sa.select(sa.func.count())
            .select_from(tables.events)
            .where(tables.events.c.type == TIP, tables.events.c.planned_at.is_(None))
        )
        return int((await conn.execute(query)).scalar_one())


async def publish_backlog(client: httpx.AsyncClient, producer: dict[str, str]) -> None:
    """Publish the tips from concurrent requests, as busy producers do, so they pile up
    faster than one worker plans them."""

    async def publish(request: int) -> None:
        events = [
            {
                "type": TIP,
                "idempotency_key": f"tip-{request}-{n}",
                "recipients": [{"id": f"u-{request}-{n}"}],
                "data": {"tip": "Press ? to see every shortcut."},
            }
            for n in range(EVENTS_PER_REQUEST)
        ]
        response = await client.post("/v1/events/batch", json={"events": events}, headers=producer)
        assert response.status_code == 202, response.text

    await asyncio.gather(*(publish(request) for request in range(BACKLOG_REQUESTS)))


async def test_a_critical_event_is_delivered_before_a_low_priority_backlog_drains(
    client: httpx.AsyncClient, producer: dict[str, str], runtime: Runtime
) -> None:
    await publish_backlog(client, producer)
    response = await client.post(
        "/v1/events",
        json={
            "type": "auth.password_reset",
            "idempotency_key": "reset-1",
            "recipients": [{"id": "u-locked-out"}],
            "data": {"reset_url": "https://app.example.com/reset?t=1", "expires_in_minutes": 30},
        },
        headers=producer,
    )
    assert response.status_code == 202, response.text
    event_id = response.json()["event_id"]

    async def delivered_in_app() -> bool:
        view = (await client.get(f"/v1/events/{event_id}", headers=producer)).json()
        return any(
            d["channel"] == "in_app" and d["state"] == "delivered" for d in view["deliveries"]
        )

    await eventually(delivered_in_app, timeout=60)
    # Nothing adds to the backlog any more, so it only shrinks: tips unplanned now were
    # unplanned when the critical event was seen delivered.
    assert await unplanned_tips(runtime) > 0

    async def drained() -> bool:
        return await unplanned_tips(runtime) == 0

    # And the low lane is served too: the backlog drains.
    await eventually(drained, timeout=240)
