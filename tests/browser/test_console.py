"""The operators' console in a real browser, against a real Tidings server: finding a
delivery and its timeline, the live template preview, the charts, and replaying a dead
letter."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import Page, expect

from tests.browser.conftest import Tidings, start_tidings
from tests.e2e.procs import Processes, last_line, run_cli
from tests.smtp_sink import SmtpSink

pytestmark = pytest.mark.asyncio(loop_scope="session")

BOB = {"id": "u-bob", "email": "bob@example.com", "name": "Bob"}


def comment(key: str, *, board: str = "Roadmap") -> dict[str, Any]:
    """A ``comment.created`` event from Ann to Bob, who has an email address."""
    return {
        "type": "comment.created",
        "idempotency_key": key,
        "actor": {"id": "u-ann", "name": "Ann"},
        "recipients": [BOB],
        "data": {"board": {"id": "b-1", "name": board}, "comment": {"id": key, "text": "Hi"}},
    }


async def operator_key(tidings: Tidings) -> str:
    """A key with the ``admin`` scope, made with the CLI as an operator does."""
    done = await asyncio.to_thread(
        run_cli, ["keys", "create", "--name", "ops", "--types", "admin"], tidings.env
    )
    return last_line(done.stdout)


WAIT_ROUNDS = 1200
"""Bound (rounds of 50 ms) for waiting on the server's pipeline, never a timing assertion:
a busy machine gets there late, a broken pipeline never does."""


async def email_of(tidings: Tidings, key: str, user: str, state: str) -> dict[str, Any]:
    """The user's email delivery once it reaches ``state`` (read through the operators'
    API; bounded, so a pipeline that never gets there fails the test)."""
    async with tidings.client() as client:
        for _ in range(WAIT_ROUNDS):
            response = await client.get(
                f"/v1/users/{user}/deliveries",
                params={"channel": "email"},
                headers={"Authorization": f"Bearer {key}"},
            )
            assert response.status_code == 200, response.text
            items = response.json()["items"]
            if items and items[0]["state"] == state:
                return dict(items[0])
            await asyncio.sleep(0.05)
    pytest.fail(f"{user}'s email never reached {state!r}")


async def dead_letters(tidings: Tidings, key: str, count: int) -> None:
    """Wait (bounded) until ``count`` dead letters are listed: a job is buried just after
    its delivery is marked failed, in a transaction of its own."""
    async with tidings.client() as client:
        for _ in range(WAIT_ROUNDS):
            response = await client.get(
                "/v1/dead-letters", headers={"Authorization": f"Bearer {key}"}
            )
            assert response.status_code == 200, response.text
            if len(response.json()["items"]) == count:
                return
            await asyncio.sleep(0.05)
    pytest.fail(f"the dead letters never numbered {count}")


async def sign_in(page: Page, tidings: Tidings, key: str, path: str = "/console") -> None:
    """Open a console page as a stranger, sign in on the page it sends to, come back."""
    await page.goto(tidings.base_url + path)
    await expect(page.get_by_label("Operator key")).to_be_visible()
    await page.get_by_label("Operator key").fill(key)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    assert page.url.endswith(path)


async def test_the_console_finds_a_delivery_and_shows_its_timeline(
    page: Page, tidings: Tidings
) -> None:
    key = await operator_key(tidings)
    await tidings.publish(comment("c-1"), comment("c-2", board="Launch"))
    sent = await email_of(tidings, key, "u-bob", "sent")

    await sign_in(page, tidings, key, "/console/deliveries")
    await page.get_by_label("User").fill("u-bob")
    await page.get_by_label("Channel").select_option("email")
    await page.get_by_label("State").select_option("sent")
    await page.get_by_role("button", name="Search").click()
    links = page.locator("a.delivery-link")
    await expect(links).to_have_count(2)
    await expect(page.locator("table.deliveries tbody tr").first).to_contain_text("u-bob")

    await page.get_by_role("link", name=sent["id"]).click()
    await expect(page.get_by_role("heading", level=1)).to_contain_text(sent["id"])
    await expect(page.locator("#delivery-state")).to_have_text("sent")
    steps = page.locator("table.timeline tbody tr")
    await expect(steps).to_have_count(len(sent["transitions"]))
    await expect(steps.first).to_contain_text("planned")
    await expect(steps.first.locator("td").nth(1)).to_have_text("plan")
    await expect(steps.last).to_contain_text("sent")
    await expect(steps.last).to_contain_text("250")  # the mail catcher's reply

    # From the timeline, the event's other deliveries are one click away.
    await page.get_by_role("link", name=sent["event_id"]).click()
    await expect(page.locator("a.delivery-link")).to_have_count(2)  # in-app and email


async def test_the_preview_renders_a_template_as_it_is_edited(page: Page, tidings: Tidings) -> None:
    key = await operator_key(tidings)
    await sign_in(page, tidings, key, "/console/catalog")
    await page.get_by_role("link", name="comment.created").click()
    title = page.locator("#in-app-title")
    await expect(title).to_have_text("Ann Example commented on Roadmap")
    email = page.frame_locator("#email-html")
    await expect(email.get_by_text("View the comment")).to_be_visible()

    data = {
        "board": {"id": "b-7", "name": "Launch <b>plan</b>"},
        "comment": {"id": "c-7", "text": "Ship it on Friday"},
    }
    await page.locator("#payload").fill(json.dumps(data, indent=2))
    await expect(title).to_have_text("Ann Example commented on Launch <b>plan</b>")
    await expect(page.locator("#in-app-body")).to_have_text("Ship it on Friday")
    await expect(page.locator("#email-subject")).to_have_text(
        "Ann Example commented on Launch <b>plan</b>"
    )
    await expect(email.locator(".quote")).to_have_text("Ship it on Friday")
    await expect(page.locator("#email-text")).to_contain_text("Ship it on Friday")
    # Markup in the payload is text in the inbox item, never an element.
    await expect(page.locator("#in-app-title b")).to_have_count(0)

    await page.locator("#locale").select_option("fr")
    await expect(page.locator("#email-subject")).to_have_text(
        "Ann Example a commenté Launch <b>plan</b>"
    )
    await expect(email.get_by_text("Voir le commentaire")).to_be_visible()
    await expect(page.locator("#email-locale")).to_have_text("fr")

    await page.locator("#payload").fill('{"board": {"id": "b-7"}}')
    problem = page.locator("#preview-problem")
    await expect(problem).to_be_visible()
    await expect(problem).to_contain_text("data.")
    await page.locator("#payload").fill("{not json")
    await expect(problem).to_contain_text("not valid JSON")


async def test_the_preview_answers_what_a_user_would_get(page: Page, tidings: Tidings) -> None:
    key = await operator_key(tidings)
    await sign_in(page, tidings, key, "/console/catalog/comment.created")
    await page.get_by_label("User id").fill("u-nobody")
    await page.get_by_role("button", name="Dry run").click()
    result = page.locator("#dry-run-result li")
    await expect(result).to_have_count(2)
    await expect(page.locator('#dry-run-result li[data-channel="in_app"]')).to_have_text(
        "in_app: deliver"
    )
    # No profile, so no address: the email would not go, and says why.
    await expect(page.locator('#dry-run-result li[data-channel="email"]')).to_have_text(
        "email: suppress (no_address)"
    )
    await page.locator("#payload").fill('{"board": {"id": "b-7"}}')
    await page.get_by_role("button", name="Dry run").click()
    problem = page.locator("#dry-run-problem")
    await expect(problem).to_be_visible()
    await expect(problem).to_contain_text("data.")
    await expect(result).to_have_count(0)


async def test_the_overview_draws_live_charts(page: Page, tidings: Tidings) -> None:
    key = await operator_key(tidings)
    await tidings.publish(comment("c-1"), comment("c-2"), comment("c-3"))
    await email_of(tidings, key, "u-bob", "sent")
    await sign_in(page, tidings, key)
    await expect(page.locator('[data-stat="events"]')).to_have_text("3")
    throughput = page.locator("#chart-throughput")
    await expect(throughput.locator(".legend").first).to_have_text("events: 3 in 30 min")
    await expect(throughput.locator("polyline, circle").first).to_be_attached()
    await expect(page.locator("#chart-latency .legend").first).to_contain_text("p50")
    await expect(page.locator("#chart-queue .legend").first).to_contain_text("waiting")


@pytest_asyncio.fixture(loop_scope="session")
async def sink() -> AsyncIterator[SmtpSink]:
    async with SmtpSink() as server:
        yield server


async def test_a_dead_letter_is_replayed_from_the_console(
    page: Page, processes: Processes, tmp_path: Path, sink: SmtpSink
) -> None:
    tidings = await start_tidings(
        processes,
        tmp_path / "data",
        email_provider="smtp",
        smtp_host=sink.host,
        smtp_port=sink.port,
        smtp_security="none",
        job_max_attempts=2,
        job_backoff_base_seconds=0.05,
        job_backoff_max_seconds=0.2,
    )
    key = await operator_key(tidings)
    sink.respond_with(["451 4.3.0 try again later"] * 2)
    await tidings.publish(comment("c-1"))
    failed = await email_of(tidings, key, "u-bob", "failed")
    await dead_letters(tidings, key, 1)

    await sign_in(page, tidings, key, "/console/dead-letters")
    rows = page.locator("table.dead-letters tbody tr[data-id]")
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_contain_text("451")
    await rows.first.locator("td").nth(5).get_by_role("link").click()
    await expect(page.get_by_role("link", name=failed["id"])).to_be_visible()

    await page.get_by_role("button", name="Replay").click()
    await expect(page.get_by_role("status")).to_have_text(
        "The dead letter's job was enqueued again."
    )
    await expect(page.get_by_text("No dead letters.")).to_be_visible()

    sent = await email_of(tidings, key, "u-bob", "sent")
    assert sent["id"] == failed["id"]
    (received,) = await sink.wait_for(1)
    assert received.message["Subject"] == "Ann commented on Roadmap"
    await page.goto(f"{tidings.base_url}/console/deliveries/{sent['id']}")
    steps = page.locator("table.timeline tbody tr")
    await expect(steps.filter(has_text="replayed")).to_have_count(1)
    await expect(steps.filter(has_text="replayed").locator("td").nth(1)).to_have_text("replay")
    await expect(steps.last).to_contain_text("sent")
