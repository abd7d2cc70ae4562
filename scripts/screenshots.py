"""Take the screenshots the docs show: the inbox widget (light and dark) and the demo.

Runs ``tidings serve`` with its demo on a throwaway data folder, fires a few example
events through the demo page, and saves PNGs into ``docs/images``. Needs Debian's
``chromium`` (``apt-get install chromium``); Playwright drives it, never downloads one.

    .venv/bin/python scripts/screenshots.py
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from playwright.sync_api import Page, expect, sync_playwright

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
FIRES = [
    ("u-cid", "board.invited"),
    ("u-ann", "comment.created"),
    ("u-dee", "mention.created"),
    ("u-ann", "auth.password_reset"),
    ("u-cid", "comment.created"),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def serve(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    env.update(
        TIDINGS_DATA_DIR=str(data_dir),
        TIDINGS_PORT=str(port),
        TIDINGS_CATALOG=str(ROOT / "catalog"),
        TIDINGS_DEMO="true",
    )
    tidings = Path(sys.executable).with_name("tidings")
    process = subprocess.Popen([str(tidings), "serve"], env=env, cwd=ROOT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("tidings serve did not start within 30s")


def shoot_inbox(page: Page, path: Path) -> None:
    """The bell and the open panel, with a margin around them."""
    bell = page.locator("tidings-inbox .bell").bounding_box()
    panel = page.locator("tidings-inbox .panel").bounding_box()
    if bell is None or panel is None:
        raise SystemExit("the inbox widget is not on the page")
    left = min(bell["x"], panel["x"]) - 16
    top = bell["y"] - 12
    right = max(bell["x"] + bell["width"], panel["x"] + panel["width"]) + 16
    bottom = panel["y"] + panel["height"] + 16
    page.screenshot(
        path=str(path), clip={"x": left, "y": top, "width": right - left, "height": bottom - top}
    )


def main() -> None:
    IMAGES.mkdir(parents=True, exist_ok=True)
    port = free_port()
    with tempfile.TemporaryDirectory() as data_dir:
        process = serve(Path(data_dir), port)
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=CHROMIUM, headless=True, args=ARGS
                )
                page = browser.new_page(viewport={"width": 1280, "height": 860})
                page.goto(f"http://127.0.0.1:{port}/demo")
                page.wait_for_function(
                    "document.querySelector('tidings-inbox').connectionState === 'open'"
                )
                for actor, type_key in FIRES:
                    page.locator("#actor").select_option(actor)
                    page.locator("button.fire", has_text=type_key).click()
                    expect(page.locator("#log li").first).not_to_contain_text("planning")
                expect(page.locator("tidings-inbox .badge")).to_have_text(str(len(FIRES)))
                expect(page.locator("#mail .subject").first).to_be_visible()
                page.locator("#mail li").first.click()
                page.locator("tidings-inbox .bell").click()
                expect(page.locator("tidings-inbox .item")).to_have_count(len(FIRES))
                # One read item, to show both states.
                page.locator("tidings-inbox .item").nth(2).get_by_role(
                    "button", name="Mark as read"
                ).click()
                page.wait_for_timeout(300)
                shoot_inbox(page, IMAGES / "inbox-light.png")
                page.screenshot(path=str(IMAGES / "demo.png"))
                page.locator("#theme").click()
                page.locator("tidings-inbox .bell").click()
                expect(page.locator("tidings-inbox .panel")).to_be_visible()
                page.wait_for_timeout(300)
                shoot_inbox(page, IMAGES / "inbox-dark.png")
                browser.close()
        finally:
            process.terminate()
            process.wait(15)
    for name in ("inbox-light.png", "inbox-dark.png", "demo.png"):
        print(IMAGES / name)


if __name__ == "__main__":
    main()
