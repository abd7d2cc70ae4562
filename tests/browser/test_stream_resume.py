"""The live inbox stream across a reconnect, in a real browser against a real ``tidings
serve``: a plain EventSource, and the widget, get every item published while they were
cut off, exactly once."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from playwright.async_api import Page, Route, expect

from tests.browser.conftest import TIMEOUT_MS, Tidings, open_embedded, wait_connection
from tests.conftest import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")

BOB = "u-bob"
WIDGET = "tidings-inbox"
STREAM = "/v1/me/inbox/stream"


def comment(key: str) -> dict[str, Any]:
    """A ``comment.created`` event from Ann to Bob, on a board named after ``key``."""
    return {
        "type": "comment.created",
        "idempotency_key": key,
        "actor": {"id": "u-ann", "name": "Ann"},
        "recipients": [BOB],
        "data": {"board": {"id": "b-1", "name": key}, "comment": {"id": key, "text": "Hi"}},
    }


def title(key: str) -> str:
    return f"Ann commented on {key}"


def bare_page(stream_url: str) -> str:
    """A page with nothing but an EventSource on the stream, recording what it gets."""
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Bare stream</title></head><body><script>
  window.items = []; window.opens = 0; window.errors = 0; window.counts = null;
  window.source = new EventSource({stream_url!r});
  source.addEventListener("open", () => {{ window.opens += 1; }});
  source.addEventListener("error", () => {{ window.errors += 1; }});
  source.addEventListener("item", (event) => {{
    window.items.push(JSON.parse(event.data).title);
  }});
  source.addEventListener("counts", (event) => {{ window.counts = JSON.parse(event.data); }});
</script></body></html>"""


class Cutoff:
    """Keeps the page's stream requests from reaching the server while on, as a network
    that is down would."""

    def __init__(self, page: Page) -> None:
        self.page = page

    @staticmethod
    def _is_stream(url: str) -> bool:
        return STREAM in url

    @staticmethod
    async def _refuse(route: Route) -> None:
        await route.abort("connectionrefused")

    async def on(self) -> None:
        await self.page.route(self._is_stream, self._refuse)

    async def off(self) -> None:
        await self.page.unroute(self._is_stream, self._refuse)


async def away(tidings: Tidings, cutoff: Cutoff, *keys: str) -> None:
    """Drop the page's stream (the server dies), and publish ``keys`` on a new server
    process while the page cannot reach it; returns once they are in the inbox."""
    await cutoff.on()
    await tidings.kill()
    await tidings.start_again()
    await tidings.publish(*(comment(key) for key in keys))

    async def delivered() -> bool:
        have = {item["title"] for item in await tidings.inbox(BOB)}
        return {title(key) for key in keys} <= have

    await eventually(delivered, timeout=TIMEOUT_MS / 1000)


async def test_a_plain_event_source_gets_every_item_once_across_a_reconnect(
    page: Page, tidings: Tidings
) -> None:
    stream_url = f"{tidings.base_url}{STREAM}?token={tidings.token(BOB)}"
    html = bare_page(stream_url)

    async def fulfil(route: Route) -> None:
        await route.fulfill(status=200, content_type="text/html; charset=utf-8", body=html)

    await page.route(f"{tidings.base_url}/bare", fulfil)
    await page.goto(f"{tidings.base_url}/bare")
    await page.wait_for_function("() => window.counts !== null", timeout=TIMEOUT_MS)
    await tidings.publish(comment("before"))
    await page.wait_for_function("() => window.items.length === 1", timeout=TIMEOUT_MS)

    cutoff = Cutoff(page)
    await away(tidings, cutoff, "away-1", "away-2", "away-3")
    assert await page.evaluate("window.errors") >= 1, "the stream never dropped"
    # The browser retries on its own, every few seconds; let the next try through. It
    # sends Last-Event-ID, and that alone brings what was published meanwhile: this page
    # fetches nothing else.
    await cutoff.off()
    await page.wait_for_function("() => window.items.length >= 4", timeout=TIMEOUT_MS)
    await tidings.publish(comment("after"))
    await page.wait_for_function(
        "() => window.items.includes('Ann commented on after')", timeout=TIMEOUT_MS
    )

    items = await page.evaluate("window.items")
    keys = ["before", "away-1", "away-2", "away-3", "after"]
    assert Counter(items) == Counter(title(key) for key in keys)
    assert items[0] == title("before")
    assert items[-1] == title("after")
    # The counts follow each item: they end at five, none counted twice.
    await page.wait_for_function("() => window.counts.total === 5", timeout=TIMEOUT_MS)
    assert await page.evaluate("window.counts") == {"unread": 5, "unseen": 5, "total": 5}
    assert await page.evaluate("window.source.readyState") == 1


async def test_the_widget_shows_every_item_missed_while_cut_off(
    page: Page, tidings: Tidings
) -> None:
    await tidings.publish(comment("before"))
    await open_embedded(
        page, tidings.base_url, tidings.base_url, tidings.token(BOB), attributes='page-size="3"'
    )
    await page.locator(f"{WIDGET} .bell").click()
    items = page.locator(f"{WIDGET} .item .title")
    await expect(items).to_have_text([title("before")])
    await expect(page.locator(f"{WIDGET} .end")).to_be_visible()

    cutoff = Cutoff(page)
    missed = [f"away-{n}" for n in range(5)]
    await away(tidings, cutoff, *missed)
    await wait_connection(page, "reconnecting")
    await cutoff.off()
    # The network is back, as the browser tells a page: the widget tries at once rather
    # than at the end of its backoff.
    await page.evaluate("() => window.dispatchEvent(new Event('online'))")
    await wait_connection(page, "open")

    # More than a page was missed: all of it is listed, once, without scrolling.
    await expect(items).to_have_count(6)
    assert Counter(await items.all_text_contents()) == Counter(
        title(key) for key in ["before", *missed]
    )
    await expect(page.locator(f"{WIDGET} .badge")).to_have_text("6")
    await tidings.publish(comment("after"))
    await expect(items).to_have_count(7)
    await expect(items.first).to_have_text(title("after"))
