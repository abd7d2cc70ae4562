"""Take the screenshots of the operators' console that docs/console.md shows.

Runs ``tidings serve`` on a throwaway data folder, publishes a few example events,
leaves one dead letter, signs in to ``/console`` with an operator's key and saves PNGs
into ``docs/images`` (``console-*.png``). Needs Debian's ``chromium``
(``apt-get install chromium``); Playwright drives it, never downloads one.

    .venv/bin/python scripts/console_screenshots.py
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import sqlalchemy as sa
from playwright.sync_api import Page, expect, sync_playwright

from tidings.kit import tables

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "docs" / "images"
CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIDINGS = Path(sys.executable).with_name("tidings")
PEOPLE = [
    {"id": "u-bob", "email": "bob@example.com", "name": "Bob"},
    {"id": "u-cid", "email": "cid@example.com", "name": "Cid", "locale": "fr"},
    {"id": "u-dee", "name": "Dee"},
]
BOARDS = ["Roadmap", "Launch plan", "Hiring", "Q3 budget"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def environment(data_dir: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    env.update(
        TIDINGS_DATA_DIR=str(data_dir),
        TIDINGS_PORT=str(port),
        TIDINGS_CATALOG=str(ROOT / "catalog"),
        TIDINGS_DEMO="false",
    )
    return env


def serve(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen([str(TIDINGS), "serve"], env=env, cwd=ROOT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("tidings serve did not start within 30s")


def create_key(env: dict[str, str], name: str, types: str) -> str:
    done = subprocess.run(
        [str(TIDINGS), "keys", "create", "--name", name, "--types", types],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip().splitlines()[-1].strip()


def publish(base: str, key: str) -> None:
    """A few comments and mentions between the example people, in two batches."""
    events = []
    for i, board in enumerate(BOARDS * 2):
        events.append(
            {
                "type": "comment.created",
                "idempotency_key": f"shot-{i}",
                "actor": {"id": "u-ann", "name": "Ann"},
                "recipients": PEOPLE[: 1 + i % 3],
                "data": {
                    "board": {"id": f"b-{i % 4}", "name": board},
                    "comment": {"id": f"c-{i}", "text": "Looks good, ship it."},
                },
            }
        )
    for batch in (events[:4], events[4:]):
        response = httpx.post(
            f"{base}/v1/events/batch",
            json={"events": batch},
            headers={"Authorization": f"Bearer {key}"},
        )
        response.raise_for_status()
        time.sleep(1.5)


def leave_a_dead_letter(data_dir: Path) -> None:
    """A digest job that gave up, as a worker leaves one, so the page has a row."""
    engine = sa.create_engine(f"sqlite:///{data_dir / 'tidings.db'}")
    now = dt.datetime.now(dt.UTC)
    with engine.begin() as conn:
        conn.execute(
            tables.dead_letters.insert().values(
                id="digest:u-dee:comments",
                kind="digest",
                payload={"user": "u-dee", "key": "comments"},
                lane=3,
                attempts=8,
                error="TimeoutError: the digest's inbox write timed out",
                created_at=now - dt.timedelta(minutes=12),
                failed_at=now,
            )
        )
    engine.dispose()


def shoot(page: Page, name: str) -> None:
    page.wait_for_timeout(300)
    page.screenshot(path=str(IMAGES / name), full_page=True)
    print(IMAGES / name)


def main() -> None:
    IMAGES.mkdir(parents=True, exist_ok=True)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as folder:
        data_dir = Path(folder)
        env = environment(data_dir, port)
        process = serve(env, port)
        try:
            producer = create_key(env, "screenshots", "*")
            operator = create_key(env, "ops", "admin")
            publish(base, producer)
            leave_a_dead_letter(data_dir)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=CHROMIUM, headless=True, args=ARGS
                )
                page = browser.new_page(viewport={"width": 1360, "height": 900})
                page.goto(f"{base}/console")
                shoot(page, "console-login.png")
                page.get_by_label("Operator key").fill(operator)
                page.get_by_role("button", name="Sign in").click()
                expect(page.locator("#chart-throughput polyline").first).to_be_attached()
                shoot(page, "console-overview.png")
                page.goto(f"{base}/console/deliveries")
                shoot(page, "console-deliveries.png")
                page.goto(f"{base}/console/deliveries?user=u-bob&channel=email")
                page.locator("a.delivery-link").first.click()
                expect(page.locator("table.timeline")).to_be_visible()
                shoot(page, "console-timeline.png")
                page.goto(f"{base}/console/catalog/comment.created?locale=fr")
                data = {
                    "board": {"id": "b-1", "name": "Launch plan"},
                    "comment": {"id": "c-1", "text": "Can we move the launch to Tuesday?"},
                }
                page.locator("#payload").fill(json.dumps(data, indent=2))
                expect(page.locator("#in-app-body")).to_have_text(data["comment"]["text"])
                shoot(page, "console-preview.png")
                page.goto(f"{base}/console/dead-letters")
                shoot(page, "console-dead-letters.png")
                page.goto(f"{base}/console/mailbox")
                shoot(page, "console-mailbox.png")
                browser.close()
        finally:
            process.terminate()
            process.wait(15)


if __name__ == "__main__":
    main()
