"""The demo page of ``tidings serve``: fire example events, watch the inbox and mailbox."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.async_api import Page, expect

from tests.browser.conftest import start_tidings, wait_connection
from tests.e2e.procs import Processes

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_demo_fills_the_inbox_and_the_mailbox(
    page: Page, processes: Processes, tmp_path: Path
) -> None:
    tidings = await start_tidings(processes, tmp_path / "data", demo=True)
    assert f"Demo: {tidings.base_url.replace('127.0.0.1', 'localhost')}/demo" in (
        tidings.server.process.output()
    )
    await page.goto(tidings.base_url + "/")
    await expect(page).to_have_url(tidings.base_url + "/demo")
    await wait_connection(page, "open")
    badge = page.locator("tidings-inbox .badge")
    await expect(page.locator("#who")).to_have_text("Bob")
    await expect(badge).to_be_hidden()

    await page.locator("button.fire", has_text="comment.created").click()
    await expect(badge).to_have_text("1")
    await expect(page.locator("#log li").first).to_contain_text("in_app: delivered")
    await expect(page.locator("#mail .subject")).to_have_text(["Ann commented on Roadmap"])

    await page.locator("#mail li").first.click()
    frame = page.frame_locator("#viewer-frame")
    await expect(frame.get_by_text("View the comment")).to_be_visible()

    await page.locator("tidings-inbox .bell").click()
    await page.locator("tidings-inbox .item").first.click()
    await expect(page.locator("#toast")).to_contain_text("Opened “Ann commented on Roadmap”")
    await expect(badge).to_be_hidden()
    await page.keyboard.press("Escape")
    await expect(page.locator("tidings-inbox .panel")).to_be_hidden()

    await page.locator("#to").select_option("u-dee")
    await expect(page.locator("#who")).to_have_text("Dee")
    await page.locator("tidings-inbox .bell").click()
    await expect(page.locator("tidings-inbox .empty")).to_be_visible()
    await page.locator("button.fire", has_text="comment.created").click()
    await expect(badge).to_have_text("1")
    await expect(page.locator("#mail .subject")).to_have_text(["Ann a commenté Roadmap"])
