"""The ``<tidings-inbox>`` widget on a phone-sized screen and with a token that is not
one, in a real browser against a real Tidings server."""

from __future__ import annotations

import pytest
from playwright.async_api import Page, expect

from tests.browser.conftest import Tidings, open_embedded, wait_connection

pytestmark = pytest.mark.asyncio(loop_scope="session")

BOB = "u-bob"
WIDGET = "tidings-inbox"
PHONE = {"width": 375, "height": 667}

CAPTURE_EVENTS = """
  window.told = {unauthorized: [], error: []};
  document.addEventListener("tidings-unauthorized", (e) => window.told.unauthorized.push(e.detail));
  document.addEventListener("tidings-error", (e) => window.told.error.push(e.detail));
"""
"""Run before the page's own scripts: records what the widget tells the page."""


@pytest.mark.parametrize(
    "attributes", ["", 'align="left"'], ids=["opens-to-the-left", "opens-to-the-right"]
)
async def test_the_open_panel_fits_a_phone_screen(
    page: Page, tidings: Tidings, attributes: str
) -> None:
    await page.set_viewport_size(PHONE)
    await open_embedded(
        page, tidings.base_url, tidings.base_url, tidings.token(BOB), attributes=attributes
    )
    await page.locator(f"{WIDGET} .bell").click()
    panel = page.locator(f"{WIDGET} .panel")
    await expect(panel).to_be_visible()

    box = await panel.bounding_box()
    assert box is not None
    assert box["x"] >= 0, box
    assert box["x"] + box["width"] <= PHONE["width"], box
    # Not by shrinking to nothing: the panel takes the screen's width, less its margins.
    assert box["width"] >= PHONE["width"] - 16 - 1, box
    # Clicking inside it works where it was moved to: it is really there.
    await panel.locator("h2").click()
    await expect(panel).to_be_visible()


async def test_a_bad_token_shows_a_neutral_note_and_tells_the_page_why(
    page: Page, tidings: Tidings
) -> None:
    await page.add_init_script(CAPTURE_EVENTS)
    # A token the JWT library rejects with its own wording ("Invalid header padding").
    await open_embedded(page, tidings.base_url, tidings.base_url, "garbage.token.here", state=None)
    await wait_connection(page, "unauthorized")
    await page.locator(f"{WIDGET} .bell").click()

    note = page.locator(f"{WIDGET} .error")
    await expect(note).to_have_text("Notifications are unavailable right now.")
    shown = await page.locator(f"{WIDGET} .panel").inner_text()
    assert "padding" not in shown.lower()
    assert "token" not in shown.lower()

    await page.wait_for_function("() => window.told.error.length >= 1")
    told = await page.evaluate("window.told")
    assert len(told["unauthorized"]) == 1, told
    refused = told["unauthorized"][0]
    assert (refused["status"], refused["code"], refused["field"]) == (
        401,
        "unauthenticated",
        "token",
    )
    assert "Invalid header padding" in refused["message"]
    failed = told["error"][0]
    assert (failed["status"], failed["code"]) == (401, "unauthenticated")
    assert "Invalid header padding" in failed["message"]
