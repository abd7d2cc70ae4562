"""A deprecated type is still published, and every answer says it is deprecated."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fastapi import FastAPI

from tests.conftest import CATALOG
from tests.integration.test_client import free_port, serving
from tidings.app.asgi import create_app
from tidings.app.runtime import Runtime
from tidings.app.wiring import build_runtime
from tidings.client import AsyncTidings, DeprecatedType
from tidings.kit.settings import Settings


@pytest.fixture
async def deprecating(
    make_settings: Callable[..., Settings], database_url: str, tmp_path: Path
) -> AsyncIterator[FastAPI]:
    folder = tmp_path / "catalog"
    shutil.copytree(CATALOG, folder)
    path = folder / "mention.created.yaml"
    document = yaml.safe_load(path.read_text())
    document["deprecated"] = {
        "since": "2026-12-01",
        "sunset": "2027-03-01",
        "note": 'publish "comment.created" with a mention instead',
    }
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    app = create_app(
        runtime=build_runtime(make_settings(database_url=database_url, catalog=folder))
    )
    async with app.router.lifespan_context(app):
        yield app


def mention(n: int) -> dict[str, Any]:
    return {
        "type": "mention.created",
        "idempotency_key": f"m-{n}",
        "recipients": ["u-bob"],
        "data": {"board": {"id": "b-1", "name": "Roadmap"}, "comment": {"id": "c", "text": "hi"}},
    }


async def test_publishing_a_deprecated_type_works_and_warns(deprecating: FastAPI) -> None:
    runtime: Runtime = deprecating.state.runtime
    _key, key = await runtime.auth.create_key("tests", ["*"])
    transport = httpx.ASGITransport(app=deprecating)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://t", headers={"Authorization": f"Bearer {key}"}
    ) as client:
        answer = await client.post("/v1/events", json=mention(1))
        assert answer.status_code == 202, answer.text
        # RFC 9745 and RFC 8594: 2026-12-01T00:00Z and 2027-03-01.
        assert answer.headers["Deprecation"] == "@1796083200"
        assert answer.headers["Sunset"] == "Mon, 01 Mar 2027 00:00:00 GMT"
        assert answer.headers["Warning"] == (
            '299 tidings "mention.created is deprecated since 2026-12-01 and is to be removed '
            'on 2027-03-01: publish \\"comment.created\\" with a mention instead"'
        )
        fine = await client.post(
            "/v1/events",
            json={**mention(2), "type": "comment.created", "idempotency_key": "c-2"},
        )
        assert fine.status_code == 202
        assert "Deprecation" not in fine.headers
        batch = await client.post(
            "/v1/events/batch",
            json={"events": [{**mention(3), "type": "comment.created"}, mention(4)]},
        )
        assert batch.status_code == 202
        assert batch.headers["Deprecation"] == "@1796083200"

    async with serving(deprecating, free_port()) as url, AsyncTidings(url, key) as tidings:
        with pytest.warns(DeprecatedType, match="deprecated since 2026-12-01"):
            accepted = await tidings.publish(
                "mention.created", recipients=["u-bob"], data=mention(5)["data"]
            )
        assert not accepted.replayed
