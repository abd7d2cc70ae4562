from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import eventually


async def test_canonical_event_reaches_the_inbox(
    client: httpx.AsyncClient,
    producer: dict[str, str],
    user_headers: Any,
    canonical_event: dict[str, Any],
) -> None:
    response = await client.post("/v1/events", json=canonical_event, headers=producer)
    assert response.status_code == 202, response.text
    assert response.json()["replayed"] is False

    async def arrived() -> bool:
        page = await client.get("/v1/me/inbox", headers=user_headers("u-bob"))
        return len(page.json()["items"]) == 1

    await eventually(arrived)
