"""The ``<tidings-inbox>`` widget in a real browser, against a real Tidings server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Page, expect

from tests.browser.conftest import (
    TIMEOUT_MS,
    Tidings,
    catalog_with_collapse,
    embed_page,
    open_embedded,
    product_site,
    start_tidings,
    wait_connection,
)
from tests.conftest import eventually
from tests.e2e.procs import Processes

pytestmark = pytest.mark.asyncio(loop_scope="session")

BOB = "u-bob"
WIDGET = "tidings-inbox"


def comment(key: str, *, board: str = "Roadmap", text: str = "Looks good") -> dict[str, Any]:
    """A ``comment.created`` event from Ann to Bob."""
    return {
        "type": "comment.created",
        "idempotency_key": key,
        "actor": {"id": "u-ann", "name": "Ann"},
        "recipients": [BOB],
        "data": {"board": {"id": "b-1", "name": board}, "comment": {"id": key, "text": text}},
    }


async def embed(page: Page, tidings: Tidings, user: str = BOB, attributes: str = "") -> None:
    await open_embedded(
        page, tidings.base_url, tidings.base_url, tidings.token(user), attributes=attributes
    )


async def open_panel(page: Page) -> None:
    await page.locator(f"{WIDGET} .bell").click()
    await expect(page.locator(f"{WIDGET} .panel")).to_be_visible()


async def test_badge_rises_live_when_events_are_published(page: Page, tidings: Tidings) -> None:
    await embed(page, tidings)
    badge = page.locator(f"{WIDGET} .badge")
    await expect(badge).to_be_hidden()
    await page.evaluate("window.loadedOnce = true")

    await tidings.publish(comment("c-1"))
    await expect(badge).to_have_text("1")
    await tidings.publish(comment("c-2"), comment("c-3"))
    await expect(badge).to_have_text("3")

    await open_panel(page)
    items = page.locator(f"{WIDGET} .item")
    await expect(items).to_have_count(3)
    await tidings.publish(comment("c-4", board="Launch plan"))
    await expect(items).to_have_count(4)
    await expect(items.first.locator(".title")).to_have_text("Ann commented on Launch plan")
    await expect(badge).to_have_text("4")
    assert await page.evaluate("window.loadedOnce") is True, "the page was reloaded"


async def test_opening_an_item_marks_it_read_on_the_server(page: Page, tidings: Tidings) -> None:
    await tidings.publish(comment("c-1", board="First"), comment("c-2", board="Second"))
    await embed(page, tidings)
    await expect(page.locator(f"{WIDGET} .badge")).to_have_text("2")
    await open_panel(page)
    second = page.locator(f"{WIDGET} .item", has_text="Ann commented on Second")
    await expect(second).to_have_class("item unread")

    await second.locator(".title").click()
    await expect(second).to_have_class("item")
    await expect(page.locator(f"{WIDGET} .badge")).to_have_text("1")
    opened = await page.evaluate("window.opened")
    by_title = {item["title"]: item for item in await tidings.inbox(BOB)}
    assert opened == [
        {
            "id": by_title["Ann commented on Second"]["id"],
            "url": f"{tidings.base_url}/boards/b-1#comment-c-2",
        }
    ]
    assert by_title["Ann commented on Second"]["read"] is True
    assert by_title["Ann commented on First"]["read"] is False


async def test_read_unread_archive_and_mark_all(page: Page, tidings: Tidings) -> None:
    await tidings.publish(*(comment(f"c-{n}", board=f"Board {n}") for n in (1, 2, 3)))
    await embed(page, tidings)
    await open_panel(page)
    badge = page.locator(f"{WIDGET} .badge")
    await expect(badge).to_have_text("3")
    first = page.locator(f"{WIDGET} .item", has_text="Board 1")
    second = page.locator(f"{WIDGET} .item", has_text="Board 2")

    await first.get_by_role("button", name="Mark as read").click()
    await expect(badge).to_have_text("2")
    await first.get_by_role("button", name="Mark as unread").click()
    await expect(badge).to_have_text("3")
    await second.get_by_role("button", name="Archive").click()
    await expect(second).to_have_count(0)
    await expect(badge).to_have_text("2")

    await page.locator(f"{WIDGET} .mark-all").click()
    await expect(badge).to_be_hidden()
    await expect(page.locator(f"{WIDGET} .item.unread")).to_have_count(0)
    items = {item["title"]: item for item in await tidings.inbox(BOB)}
    assert sorted(items) == ["Ann commented on Board 1", "Ann commented on Board 3"]
    assert all(item["read"] for item in items.values())
    archived = await tidings.inbox(BOB, archived="true")
    assert [item["title"] for item in archived] == ["Ann commented on Board 2"]


async def test_scrolling_loads_every_page_of_fifty_items(page: Page, tidings: Tidings) -> None:
    expected = {f"Ann commented on Board {n}" for n in range(50)}
    await tidings.publish(*(comment(f"c-{n}", board=f"Board {n}") for n in range(50)))

    async def all_delivered() -> bool:
        return len(await tidings.inbox(BOB)) == 50

    # Delivered before the page opens: the list comes from pages, not from the stream.
    await eventually(all_delivered, timeout=TIMEOUT_MS / 1000)
    await embed(page, tidings)
    await expect(page.locator(f"{WIDGET} .badge")).to_have_text("50")
    await open_panel(page)
    items = page.locator(f"{WIDGET} .item")
    await expect(items).to_have_count(20)
    end = page.locator(f"{WIDGET} .end")
    await expect(end).to_be_hidden()

    for _page in range(5):
        shown = await items.count()
        if shown == 50:
            break
        await items.last.scroll_into_view_if_needed()
        await expect(items).not_to_have_count(shown)
    await expect(items).to_have_count(50)
    await expect(end).to_be_visible()
    titles = await page.locator(f"{WIDGET} .item .title").all_text_contents()
    assert len(titles) == 50
    assert set(titles) == expected


async def test_stream_recovers_after_the_server_is_killed(page: Page, tidings: Tidings) -> None:
    await embed(page, tidings)
    await open_panel(page)
    badge = page.locator(f"{WIDGET} .badge")
    await tidings.publish(comment("c-1", board="Before"))
    await expect(badge).to_have_text("1")

    failed_tries: list[str] = []
    page.on(
        "requestfailed",
        lambda request: failed_tries.append(request.url) if "/counts" in request.url else None,
    )
    await tidings.kill()
    await wait_connection(page, "reconnecting")
    await expect(page.locator(f"{WIDGET} .status")).to_have_attribute("data-state", "reconnecting")

    async def tried_twice() -> bool:
        return len(failed_tries) >= 2

    # A failed try leads to another one, later: the widget never gives up on a network error.
    await eventually(tried_twice, timeout=TIMEOUT_MS / 1000)
    assert await page.locator(WIDGET).evaluate("element => element.connectionState") == (
        "reconnecting"
    )
    await tidings.start_again()
    await wait_connection(page, "open")

    await tidings.publish(comment("c-2", board="After"))
    await expect(badge).to_have_text("2")
    items = page.locator(f"{WIDGET} .item .title")
    await expect(items).to_have_text(["Ann commented on After", "Ann commented on Before"])


async def test_a_refused_token_stops_the_retries_until_a_new_one(
    page: Page, tidings: Tidings
) -> None:
    await open_embedded(page, tidings.base_url, tidings.base_url, "not-a-token", state=None)
    await wait_connection(page, "unauthorized")
    await expect(page.locator(f"{WIDGET} .status")).to_have_attribute("data-state", "unauthorized")
    await expect(page.locator(f"{WIDGET} .badge")).to_be_hidden()
    assert await page.evaluate("window.refusals") == 1

    await page.locator(WIDGET).evaluate(
        "(element, token) => element.setAttribute('token', token)", tidings.token(BOB)
    )
    await wait_connection(page, "open")
    await tidings.publish(comment("c-1"))
    await expect(page.locator(f"{WIDGET} .badge")).to_have_text("1")


async def test_server_text_is_shown_as_text_never_run(page: Page, tidings: Tidings) -> None:
    payload = '<img src=x onerror="window.injected=1;alert(1)"><script>alert(2)</script>'
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: dialogs.append(dialog.message))
    await embed(page, tidings)
    await open_panel(page)
    await tidings.publish(comment("c-1", board=payload, text=payload))
    item = page.locator(f"{WIDGET} .item", has_text="commented on")
    await expect(item.locator(".title")).to_have_text(f"Ann commented on {payload}")
    await expect(item.locator(".body")).to_have_text(payload)
    await expect(page.locator(f"{WIDGET} img")).to_have_count(0)
    await expect(page.locator(f"{WIDGET} .item script")).to_have_count(0)

    await item.click()
    await page.wait_for_function("window.opened.length === 1")
    await expect(item).to_have_class("item")
    assert await page.evaluate("window.injected") is None
    assert dialogs == []


async def test_keyboard_opens_moves_and_closes(page: Page, tidings: Tidings) -> None:
    await tidings.publish(*(comment(f"c-{n}", board=f"Board {n}") for n in (1, 2, 3)))
    await embed(page, tidings)
    bell = page.locator(f"{WIDGET} .bell")
    panel = page.locator(f"{WIDGET} .panel")
    items = page.locator(f"{WIDGET} .item")
    await expect(bell).to_have_attribute("aria-label", "Notifications, 3 unread")

    await page.keyboard.press("Tab")
    await expect(bell).to_be_focused()
    await page.keyboard.press("Enter")
    await expect(panel).to_be_visible()
    await expect(bell).to_have_attribute("aria-expanded", "true")
    await expect(items).to_have_count(3)
    await page.keyboard.press("Escape")
    await expect(panel).to_be_hidden()
    await expect(bell).to_be_focused()

    await page.keyboard.press("Space")
    await expect(panel).to_be_visible()
    await expect(items.nth(0)).to_be_focused()
    await page.keyboard.press("ArrowDown")
    await expect(items.nth(1)).to_be_focused()
    await page.keyboard.press("Enter")
    await expect(items.nth(1)).to_have_class("item")
    await expect(bell).to_have_attribute("aria-label", "Notifications, 2 unread")
    await page.keyboard.press("Tab")
    await expect(items.nth(1).get_by_role("button", name="Mark as unread")).to_be_focused()
    await page.keyboard.press("Escape")
    await expect(panel).to_be_hidden()
    await expect(bell).to_be_focused()


async def test_themes_follow_the_attribute_and_custom_properties(
    page: Page, tidings: Tidings
) -> None:
    await embed(page, tidings)
    await open_panel(page)
    panel = page.locator(f"{WIDGET} .panel")
    await expect(panel).to_have_css("background-color", "rgb(255, 255, 255)")
    await page.locator(WIDGET).evaluate("element => element.setAttribute('theme', 'dark')")
    await expect(panel).to_have_css("background-color", "rgb(27, 30, 36)")
    await page.locator(WIDGET).evaluate(
        "element => element.style.setProperty('--tidings-bg', 'rgb(1, 2, 3)')"
    )
    await expect(panel).to_have_css("background-color", "rgb(1, 2, 3)")


async def test_collapsed_items_name_their_people(
    page: Page, processes: Processes, tmp_path: Path
) -> None:
    tidings = await start_tidings(
        processes, tmp_path / "data", catalog=str(catalog_with_collapse(tmp_path / "catalog"))
    )
    await embed(page, tidings)
    await open_panel(page)
    items = page.locator(f"{WIDGET} .item")
    for n, name in enumerate(["Ann", "Cid", "Dee", "Eve"]):
        await tidings.publish(
            {
                "type": "card.moved",
                "idempotency_key": f"m-{n}",
                "actor": {"id": f"u-{name.lower()}", "name": name},
                "recipients": [BOB],
                "data": {"board": {"id": "b-1", "name": "Roadmap"}},
            }
        )
        await expect(items.first.locator(".group")).to_have_text(
            ["", "Cid and Ann", "Dee and 2 others", "Eve and 3 others"][n], timeout=TIMEOUT_MS
        )
    await expect(items).to_have_count(1)
    await expect(items.first.locator(".title")).to_have_text("Cards moved on Roadmap")
    await expect(page.locator(f"{WIDGET} .badge")).to_have_text("1")


async def test_a_page_on_another_origin_embeds_the_widget(
    page: Page, processes: Processes, tmp_path: Path
) -> None:
    placeholder = "TOKEN-PLACEHOLDER"
    tidings = await start_tidings(processes, tmp_path / "data")
    html = embed_page(tidings.base_url, placeholder)
    with product_site(html.replace(placeholder, tidings.token(BOB))) as product:
        await tidings.server.process.terminate()
        tidings.env["TIDINGS_CORS_ORIGINS"] = f'["{product}"]'
        await tidings.start_again()

        await page.goto(f"{product}/product")
        await wait_connection(page, "open")
        await tidings.publish(comment("c-1"))
        await expect(page.locator(f"{WIDGET} .badge")).to_have_text("1")
        await open_panel(page)
        item = page.locator(f"{WIDGET} .item")
        await expect(item).to_have_count(1)
        await item.click()
        await expect(page.locator(f"{WIDGET} .badge")).to_be_hidden()
    assert [i["read"] for i in await tidings.inbox(BOB)] == [True]
