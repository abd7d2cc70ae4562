"""The API reference page renders in a browser that may reach no host but Tidings."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from playwright.async_api import Page, Route, expect

from tests.browser.conftest import Tidings

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def _offline(page: Page, tidings: Tidings) -> list[str]:
    """Refuse every request to another host; returns the list of the refused ones."""
    ours = urlsplit(tidings.base_url).netloc
    refused: list[str] = []

    async def only_tidings(route: Route) -> None:
        if urlsplit(route.request.url).netloc == ours:
            await route.continue_()
        else:
            refused.append(route.request.url)
            await route.abort()

    await page.route("**/*", only_tidings)
    return refused


async def test_swagger_ui_renders_every_operation_and_offers_each_credential(
    page: Page, tidings: Tidings
) -> None:
    refused = await _offline(page, tidings)
    await page.goto(tidings.base_url + "/docs")
    await expect(page.locator(".opblock-summary-path", has_text="/v1/events").first).to_be_visible()
    await expect(
        page.locator(".opblock-summary-path", has_text="/v1/me/inbox").first
    ).to_be_visible()
    await page.locator("button.authorize").first.click()
    dialog = page.locator(".dialog-ux")
    for scheme in ("producerKey", "userToken", "userTokenQuery"):
        await expect(dialog.get_by_text(scheme, exact=False).first).to_be_visible()
    assert refused == []
