"""The console in a real browser: from an email delivery's timeline to the message the
mail catcher caught for it, and chart legends that sum up their window."""

from __future__ import annotations

import pytest
from playwright.async_api import Page, expect

from tests.browser.conftest import Tidings
from tests.browser.test_console import comment, email_of, operator_key, sign_in

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_the_timeline_of_an_email_links_to_the_caught_message(
    page: Page, tidings: Tidings
) -> None:
    key = await operator_key(tidings)
    await tidings.publish(comment("c-1", board="Launch"))
    sent = await email_of(tidings, key, "u-bob", "sent")

    await sign_in(page, tidings, key, f"/console/deliveries/{sent['id']}")
    await expect(page.locator("#delivery-state")).to_have_text("sent")
    sent_step = page.locator("table.timeline tbody tr").last
    await expect(sent_step).to_contain_text("sent")
    await sent_step.get_by_role("link", name="view the email").click()

    await expect(page).to_have_url(f"{tidings.base_url}/console/mailbox/{sent['id']}")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Ann commented on Launch")
    email = page.frame_locator("iframe[title='email HTML']")
    await expect(email.get_by_text("View the comment")).to_be_visible()
    await expect(email.get_by_text("Unsubscribe from comment emails")).to_be_visible()
    # And back: the message names its delivery.
    await page.get_by_role("link", name=sent["id"]).click()
    await expect(page.locator("#delivery-state")).to_have_text("sent")


async def test_the_legends_count_the_window(page: Page, tidings: Tidings) -> None:
    key = await operator_key(tidings)
    await tidings.publish(comment("c-1"), comment("c-2"))
    await email_of(tidings, key, "u-bob", "sent")
    await sign_in(page, tidings, key)
    legends = page.locator("#chart-throughput .legend")
    await expect(legends).to_have_text(["events: 2 in 30 min", "deliveries: 4 in 30 min"])
    await expect(page.locator("#chart-latency .legend").first).to_contain_text(" s in 30 min")
