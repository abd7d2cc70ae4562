"""The ``<tidings-inbox>`` widget when its token runs out, in a real browser against a
real Tidings server."""

from __future__ import annotations

import datetime as dt

import pytest
from playwright.async_api import Page, expect

from tests.browser.conftest import SECRET, TIMEOUT_MS, Tidings, open_embedded, wait_connection
from tidings.auth import tokens

pytestmark = pytest.mark.asyncio(loop_scope="session")

BOB = "u-bob"
WIDGET = "tidings-inbox"


def nearly_expired(user_id: str, *, seconds_left: int) -> str:
    """A token past its ``exp`` already, accepted for ``seconds_left`` more thanks to
    the clock leeway: its stream ends with ``expired`` that much later."""
    ttl = dt.timedelta(minutes=5)
    minted = dt.datetime.now(dt.UTC) - ttl - tokens.LEEWAY + dt.timedelta(seconds=seconds_left)
    return tokens.issue_user_token(SECRET, user_id, ttl=ttl, now=minted)


async def test_an_expired_stream_asks_the_token_provider_and_carries_on(
    page: Page, tidings: Tidings
) -> None:
    await open_embedded(
        page, tidings.base_url, tidings.base_url, nearly_expired(BOB, seconds_left=6)
    )
    fresh = tidings.token(BOB)
    await page.locator(WIDGET).evaluate(
        """(element, token) => {
          window.renewals = 0;
          element.tokenProvider = async () => { window.renewals += 1; return token; };
        }""",
        fresh,
    )
    await page.wait_for_function("() => window.renewals === 1", timeout=TIMEOUT_MS)
    await wait_connection(page, "open")
    assert await page.locator(WIDGET).get_attribute("token") == fresh

    await tidings.publish(
        {
            "type": "comment.created",
            "idempotency_key": "c-after-renewal",
            "actor": {"id": "u-ann", "name": "Ann"},
            "recipients": [BOB],
            "data": {
                "board": {"id": "b-1", "name": "Roadmap"},
                "comment": {"id": "c", "text": "Hi"},
            },
        }
    )
    await expect(page.locator(f"{WIDGET} .badge")).to_have_text("1")
    assert await page.evaluate("window.refusals") == 0
    assert await page.evaluate("window.renewals") == 1


async def test_an_expired_stream_without_a_provider_stops_and_says_so(
    page: Page, tidings: Tidings
) -> None:
    await open_embedded(
        page, tidings.base_url, tidings.base_url, nearly_expired(BOB, seconds_left=6)
    )
    stream_requests: list[str] = []
    page.on(
        "request",
        lambda request: stream_requests.append(request.url) if "/stream" in request.url else None,
    )
    await wait_connection(page, "unauthorized")
    await page.wait_for_function("() => window.refusals === 1", timeout=TIMEOUT_MS)
    # Told the token expired, the widget did not try the same token again.
    assert stream_requests == []
