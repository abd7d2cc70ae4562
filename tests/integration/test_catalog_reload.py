"""The catalog of a running process reloads without a restart: ``POST /v1/catalog/reload``
(operators only) serves the folder as it is now to every part of the process — event
validation, planning, both channels, the preview — and a folder with problems is refused
with ``tidings catalog check``'s messages while the running catalog stays."""

from __future__ import annotations

import io
import json
import logging
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog

from tests.conftest import CATALOG, eventually
from tidings import catalog
from tidings.app.runtime import Runtime
from tidings.kit import logs
from tidings.kit.settings import Settings

NEW_TYPE = """\
key: board.archived
category: comments
description: A board you follow was archived.
schema:
  type: object
  required: [board]
  properties:
    board: {type: string}
example: {board: Roadmap}
channels:
  in_app:
    title: "{{ data.board }} was archived"
    body: "The board {{ data.board }} is archived."
  email:
    subject: "{{ data.board }} was archived"
    html: >-
      <!doctype html><html><head><title>{{ subject }}</title></head>
      <body><p>The board {{ data.board }} is archived.</p></body></html>
    text: "The board {{ data.board }} is archived."
"""

ARCHIVED = {
    "type": "board.archived",
    "idempotency_key": "archived-1",
    "actor": {"id": "u-ann", "name": "Ann"},
    "recipients": [{"id": "u-bob", "email": "bob@example.com"}],
    "data": {"board": "Roadmap"},
}


@pytest.fixture
def catalog_dir(tmp_path: Path) -> Path:
    """A copy of the shipped catalog that the test may change."""
    folder = tmp_path / "catalog"
    shutil.copytree(CATALOG, folder)
    return folder


@pytest.fixture
def settings(
    make_settings: Callable[..., Settings], database_url: str, catalog_dir: Path
) -> Settings:
    return make_settings(database_url=database_url, catalog=catalog_dir)


@pytest.fixture
async def operator(runtime: Runtime) -> dict[str, str]:
    _key, plaintext = await runtime.auth.create_key("ops", ["admin"])
    return {"Authorization": f"Bearer {plaintext}"}


@pytest.fixture
def output() -> Iterator[io.StringIO]:
    """Log lines, as JSON, while the test runs; logging is put back after it."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    stream = io.StringIO()
    logs.configure(json=True, level="info", stream=stream)
    try:
        yield stream
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)
        structlog.reset_defaults()


async def settled(
    client: httpx.AsyncClient, event_id: str, headers: dict[str, str]
) -> list[dict[str, Any]]:
    """The event's deliveries once none of them waits for a job any more."""
    found: list[dict[str, Any]] = []

    async def done() -> bool:
        view = (await client.get(f"/v1/events/{event_id}", headers=headers)).json()
        found[:] = view["deliveries"]
        return view["status"] == "planned" and all(
            d["state"] not in ("planned", "scheduled") for d in found
        )

    await eventually(done)
    return found


async def test_a_type_added_to_the_folder_is_served_everywhere_after_a_reload(
    client: httpx.AsyncClient,
    runtime: Runtime,
    producer: dict[str, str],
    operator: dict[str, str],
    catalog_dir: Path,
) -> None:
    unknown = await client.post("/v1/events", json=ARCHIVED, headers=producer)
    assert unknown.status_code == 422, unknown.text

    (catalog_dir / "board.archived.yaml").write_text(NEW_TYPE)
    reloaded = await client.post("/v1/catalog/reload", headers=operator)
    assert reloaded.status_code == 200, reloaded.text
    assert reloaded.json() == {
        "types": len(catalog.load(catalog_dir)),
        "added": ["board.archived"],
        "removed": [],
        "breaking": [],
    }

    published = await client.post("/v1/events", json=ARCHIVED, headers=producer)
    assert published.status_code == 202, published.text
    deliveries = await settled(client, published.json()["event_id"], producer)
    states = {d["channel"]: d["state"] for d in deliveries}
    assert states == {"in_app": "delivered", "email": "sent"}, deliveries

    preview = await client.post(
        "/v1/catalog/board.archived/preview",
        json={"data": {"board": "Roadmap"}},
        headers=producer,
    )
    assert preview.status_code == 200, preview.text
    assert preview.json()["subject"] == "Roadmap was archived"


async def test_a_folder_with_problems_is_refused_and_the_running_catalog_stays(
    client: httpx.AsyncClient,
    runtime: Runtime,
    producer: dict[str, str],
    operator: dict[str, str],
    catalog_dir: Path,
    output: io.StringIO,
    canonical_event: dict[str, Any],
) -> None:
    broken = catalog_dir / "broken.yaml"
    broken.write_text("key: broken.thing\ncategory: comments\n")
    (catalog_dir / "board.archived.yaml").write_text(NEW_TYPE)
    expected = [str(problem) for problem in catalog.check(catalog_dir)]
    assert expected

    refused = await client.post("/v1/catalog/reload", headers=operator)
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert error["code"] == "catalog_invalid"
    assert error["field"] == "catalog"
    assert "the running one is kept" in error["message"]
    assert all(line in error["message"] for line in expected)
    problems = error["problems"]
    assert {problem["file"] for problem in problems} == {str(broken)}
    assert {problem["field"] for problem in problems} >= {"description", "schema"}

    # Nothing of the refused folder is served, the good new file included.
    assert runtime.catalog.get("board.archived") is None
    archived = await client.post("/v1/events", json=ARCHIVED, headers=producer)
    assert archived.status_code == 422, archived.text
    kept = await client.post("/v1/events", json=canonical_event, headers=producer)
    assert kept.status_code == 202, kept.text

    # The endpoint, and a signal or a file change (no caller to answer), each leave one
    # line naming the file.
    def error_lines() -> list[dict[str, Any]]:
        found = [json.loads(line) for line in output.getvalue().splitlines()]
        return [line for line in found if line["level"] == "error"]

    assert len(error_lines()) == 1, error_lines()
    await runtime.reloader.reload_and_log()
    errors = error_lines()
    assert len(errors) == 2, errors
    for error_line in errors:
        assert error_line["event"].startswith(f"the catalog in {catalog_dir} was not reloaded")
        assert all(line in error_line["event"] for line in expected)


async def test_only_operators_reload(
    client: httpx.AsyncClient, producer: dict[str, str], runtime: Runtime
) -> None:
    refused = await client.post("/v1/catalog/reload", headers=producer)
    assert refused.status_code == 403
    assert refused.json()["error"]["field"] == "authorization"
    assert len(runtime.catalog) == len(catalog.load(CATALOG))
