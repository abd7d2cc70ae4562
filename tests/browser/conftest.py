"""Fixtures of the browser tests: Debian's Chromium driven by Playwright, and real
``tidings serve`` processes on SQLite that a test can kill and start again.

The browser is the system's ``/usr/bin/chromium`` (installed from Debian's ``chromium``
package when missing); Playwright never downloads one.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.server
import os
import shutil
import subprocess
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, Route, async_playwright, expect

from tests.e2e.procs import Processes, Server, create_key, free_port, tidings_env
from tidings.auth import tokens

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SECRET = "browser-test-secret-" + "x" * 32
TIMEOUT_MS = 20_000
"""Generous bound for Playwright's auto-waiting expectations: never a timing assertion."""

expect.set_options(timeout=TIMEOUT_MS)


def ensure_chromium() -> Path:
    """``/usr/bin/chromium``, installing Debian's ``chromium`` package first if missing."""
    if CHROMIUM.exists():
        return CHROMIUM
    if os.geteuid() != 0:
        pytest.fail(
            f"{CHROMIUM} is missing and the tests are not running as root, so they cannot "
            "install it: run `apt-get install -y chromium` first"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "update", "-q"],
        ["apt-get", "-o", "DPkg::Lock::Timeout=600", "install", "-y", "-q", "chromium"],
    ):
        done = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=1200, check=False
        )
        if done.returncode != 0:
            pytest.fail(
                f"`{' '.join(command)}` failed ({done.returncode}); the browser tests need "
                f"Debian's chromium package:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
            )
    if not CHROMIUM.exists():
        pytest.fail(f"the chromium package was installed but {CHROMIUM} is still missing")
    return CHROMIUM


@pytest.fixture(scope="session")
def chromium() -> Path:
    """The system Chromium, installed once per test session when missing."""
    return ensure_chromium()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser(chromium: Path) -> AsyncIterator[Browser]:
    """One headless Chromium for the whole session; each test gets its own context.

    Playwright starts it with a fresh temporary profile and deletes it on close.
    """
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(chromium), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest_asyncio.fixture(loop_scope="session")
async def page(browser: Browser) -> AsyncIterator[Page]:
    """A page in a fresh browser context (no cookies or storage from other tests)."""
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    try:
        yield await context.new_page()
    finally:
        await context.close()


@dataclass
class Tidings:
    """A real ``tidings serve`` on an SQLite file, with a producer key; it can be killed
    and started again on the same port and data folder."""

    processes: Processes
    env: dict[str, str]
    server: Server
    api_key: str = ""

    @property
    def base_url(self) -> str:
        return self.server.base_url

    def token(self, user_id: str) -> str:
        """A user token, signed with the server's secret."""
        return tokens.issue_user_token(
            SECRET, user_id, ttl=dt.timedelta(hours=1), now=dt.datetime.now(dt.UTC)
        )

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base_url, timeout=30.0)

    async def publish(self, *events: dict[str, Any]) -> list[str]:
        """Publish events through the HTTP API, as a producer does; returns their ids."""
        async with self.client() as client:
            response = await client.post(
                "/v1/events/batch",
                json={"events": list(events)},
                headers={"Authorization": f"Bearer {self.api_key}"},
            )
        assert response.status_code == 202, response.text
        return [accepted["event_id"] for accepted in response.json()["events"]]

    async def inbox(self, user_id: str, **params: Any) -> list[dict[str, Any]]:
        """The user's whole inbox, read through the end-user API."""
        items: list[dict[str, Any]] = []
        cursor = None
        async with self.client() as client:
            while True:
                query = {"limit": 100, **params, **({"cursor": cursor} if cursor else {})}
                response = await client.get(
                    "/v1/me/inbox",
                    params=query,
                    headers={"Authorization": f"Bearer {self.token(user_id)}"},
                )
                assert response.status_code == 200, response.text
                body = response.json()
                items.extend(body["items"])
                cursor = body["next_cursor"]
                if cursor is None:
                    return items

    async def kill(self) -> None:
        """SIGKILL: every open connection drops at once, nothing is shut down cleanly."""
        await self.server.process.kill()

    async def start_again(self) -> None:
        """A new process on the same port, data folder and secret."""
        self.server = await self.processes.serve("tidings-again", self.env)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    """Starts ``tidings`` subprocesses; kills any still running at teardown."""
    started = Processes(tmp_path / "logs")
    try:
        yield started
    finally:
        started.close()


async def start_tidings(
    processes: Processes, data_dir: Path, **settings: str | int | float | bool
) -> Tidings:
    """``tidings serve`` on a free port with the given settings, and a producer key."""
    env = tidings_env(data_dir, port=free_port(), secret=SECRET, **{"demo": False, **settings})
    server = await processes.serve("tidings", env)
    tidings = Tidings(processes, env, server)
    tidings.api_key = await create_key(env)
    return tidings


@pytest_asyncio.fixture(loop_scope="session")
async def tidings(processes: Processes, tmp_path: Path) -> Tidings:
    """A running Tidings with the example catalog, its demo off."""
    return await start_tidings(processes, tmp_path / "data")


def embed_page(api: str, token: str, *, attributes: str = "") -> str:
    """A product's page embedding the widget with one script tag. Opening an item only
    records it (``window.opened``), so the test stays on the page; refused tokens are
    counted in ``window.refusals``."""
    return f"""<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Product</title>
<script src="{api}/widget/tidings-inbox.js" defer></script></head>
<body>
<header style="display:flex;justify-content:flex-end;padding:8px 24px">
  <tidings-inbox api="{api}" token="{token}" {attributes}></tidings-inbox>
</header>
<script>
  window.opened = [];
  window.refusals = 0;
  const inbox = document.querySelector("tidings-inbox");
  inbox.addEventListener("tidings-open", (event) => {{
    window.opened.push({{id: event.detail.item.id, url: event.detail.url}});
    event.preventDefault();
  }});
  inbox.addEventListener("tidings-unauthorized", () => {{ window.refusals += 1; }});
</script>
</body>
</html>"""


async def open_embedded(
    page: Page,
    origin: str,
    api: str,
    token: str,
    *,
    attributes: str = "",
    state: str | None = "open",
) -> None:
    """Serve the product page at ``origin``/product (intercepted, not from Tidings) and
    open it; wait until the widget's live stream reaches ``state`` (unless None)."""
    html = embed_page(api, token, attributes=attributes)

    async def fulfil(route: Route) -> None:
        await route.fulfill(status=200, content_type="text/html; charset=utf-8", body=html)

    await page.route(f"{origin}/product", fulfil)
    await page.goto(f"{origin}/product")
    if state is not None:
        await wait_connection(page, state)


async def wait_connection(page: Page, state: str) -> None:
    """Wait (bounded) until the widget's live stream reaches ``state``."""
    await page.wait_for_function(
        "state => document.querySelector('tidings-inbox')?.connectionState === state",
        arg=state,
        timeout=TIMEOUT_MS,
    )


@contextlib.contextmanager
def product_site(html: str) -> Iterator[str]:
    """A real HTTP server on another loopback port serving ``html`` at ``/product``: a
    product's page on an origin of its own. Yields the origin."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = html.encode()
            self.send_response(200 if self.path == "/product" else 404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="product-site", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def catalog_with_collapse(folder: Path) -> Path:
    """The example catalog plus a type whose in-app items collapse per board."""
    from tests.conftest import CATALOG

    shutil.copytree(CATALOG, folder)
    (folder / "card.moved.yaml").write_text(
        """key: card.moved
category: comments
description: Someone moved a card on a board you follow.
schema:
  type: object
  required: [board]
  properties:
    board:
      type: object
      required: [id, name]
      properties: {id: {type: string}, name: {type: string}}
example:
  board: {id: b-1, name: Roadmap}
channels:
  in_app:
    title: "{{ actor.name }} moved a card on {{ data.board.name }}"
    body: "Open the board to see where it went."
rules:
  collapse:
    key: "{{ data.board.id }}"
    title: "Cards moved on {{ data.board.name }}"
"""
    )
    return folder
