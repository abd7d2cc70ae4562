"""The way out of an email: a visible unsubscribe link in both parts of the message, and
the pages it opens, in the recipient's language, naming the category by its title; a
broken link gets a page in a browser and the JSON error elsewhere."""

from __future__ import annotations

import email.message
import re
import urllib.parse
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from tests.smtp_sink import SmtpSink
from tidings.app.asgi import create_app
from tidings.app.runtime import Runtime
from tidings.app.wiring import build_runtime
from tidings.kit import tables
from tidings.kit.settings import Settings

BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
WAIT_SECONDS = 60.0
"""Bound on waiting for the sink to receive a message: never a timing assertion."""


def comment(recipient: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "comment.created",
        "idempotency_key": "c-1",
        "actor": {"id": "u-ann", "name": "Ann"},
        "recipients": [recipient],
        "data": {"board": {"id": "b-1", "name": "Roadmap"}, "comment": {"id": "c-1", "text": "Hi"}},
    }


async def email_choices(runtime: Runtime) -> list[tuple[str, Any]]:
    async with runtime.db.reader() as conn:
        rows = (await conn.execute(sa.select(tables.preference_sets))).all()
    return [(row.owner_id, row.choices) for row in rows]


OPTED_OUT = {"categories": {"comments": {"channels": {"email": False}}}}


# A link in the message, over real SMTP --------------------------------------------------


@pytest.fixture
async def sink() -> AsyncIterator[SmtpSink]:
    async with SmtpSink() as server:
        yield server


@pytest.fixture
async def smtp_app(
    make_settings: Callable[..., Settings], database_url: str, sink: SmtpSink
) -> AsyncIterator[FastAPI]:
    settings = make_settings(
        database_url=database_url,
        email_provider="smtp",
        smtp_host="127.0.0.1",
        smtp_port=sink.port,
        smtp_security="none",
    )
    application = create_app(runtime=build_runtime(settings))
    async with application.router.lifespan_context(application):
        yield application


def part(message: email.message.EmailMessage, subtype: str) -> str:
    found = message.get_body((subtype,))
    assert found is not None, f"no {subtype} part"
    assert isinstance(found, email.message.EmailMessage)
    return str(found.get_content())


def header_url(message: email.message.EmailMessage) -> str:
    targets = [t.strip(" <>") for t in str(message["List-Unsubscribe"]).split(",")]
    return next(t for t in targets if t.startswith("http"))


async def test_the_email_shows_the_unsubscribe_link_in_both_parts_and_it_works(
    smtp_app: FastAPI, sink: SmtpSink
) -> None:
    runtime: Runtime = smtp_app.state.runtime
    _key, plaintext = await runtime.auth.create_key("tests", ["*"])
    transport = httpx.ASGITransport(app=smtp_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://tidings.test") as client:
        published = await client.post(
            "/v1/events",
            json=comment({"id": "u-bob", "email": "bob@example.com"}),
            headers={"Authorization": f"Bearer {plaintext}"},
        )
        assert published.status_code == 202, published.text
        [received] = await sink.wait_for(1, timeout=WAIT_SECONDS)
        message = received.message
        url = header_url(message)

        # The same page as the header's, visible in the text and linked in the HTML.
        text = part(message, "plain")
        assert url in text
        assert "Unsubscribe from comment emails" in text
        html = part(message, "html")
        assert re.search(
            rf'<a [^>]*href="{re.escape(url)}"[^>]*>\s*Unsubscribe from comment emails', html
        )

        path = urllib.parse.urlsplit(url).path
        page = await client.get(path, headers={"Accept": BROWSER})
        assert page.status_code == 200
        assert "<strong>Comments</strong>" in page.text
        assert await email_choices(runtime) == []
        done = await client.post(
            path,
            data={"List-Unsubscribe": "One-Click"},
            headers={"Accept": BROWSER},
        )
        assert done.status_code == 200
        assert "no longer get emails about <strong>Comments</strong>" in done.text
    assert await email_choices(runtime) == [("u-bob", OPTED_OUT)]


# The pages, in the recipient's language -------------------------------------------------


def path_of(runtime: Runtime, category: str = "comments", locale: str | None = None) -> str:
    """The path of Dee's unsubscribe link, from an email written for ``locale``."""
    email_locale = {} if locale is None else {"locale": locale}
    link = runtime.composer.unsubscribe_for("u-dee", category, "dee@example.com", **email_locale)
    return urllib.parse.urlsplit(link.url).path


async def test_the_page_speaks_the_stored_locale_and_names_the_category_by_its_title(
    client: httpx.AsyncClient, producer: dict[str, str], runtime: Runtime
) -> None:
    stored = await client.put(
        "/v1/users/u-dee", json={"email": "dee@example.com", "locale": "fr-CA"}, headers=producer
    )
    assert stored.status_code == 200, stored.text
    # The stored locale wins over the browser's.
    path = path_of(runtime)
    headers = {"Accept": BROWSER, "Accept-Language": "en-US,en;q=0.9"}

    page = await client.get(path, headers=headers)
    assert page.status_code == 200
    assert page.text.startswith("<!doctype html><html lang=fr>")
    assert "<strong>Commentaires</strong>" in page.text
    assert "dee@example.com" in page.text
    assert ">Se désabonner</button>" in page.text

    done = await client.post(path, data={"List-Unsubscribe": "One-Click"}, headers=headers)
    assert done.status_code == 200
    assert "Vous ne recevrez plus d'e-mails concernant <strong>Commentaires</strong>" in done.text
    assert await email_choices(runtime) == [("u-dee", OPTED_OUT)]


@pytest.mark.parametrize(
    ("token_locale", "accept_language", "lang", "title", "button"),
    [
        ("de-AT", "fr", "de", "Kommentare", "Abmelden"),  # the email's locale
        (None, "pt-BR, de;q=0.8, fr;q=0.9", "fr", "Commentaires", "Se désabonner"),  # browser's
        ("pt-BR", "pt", "en", "Comments", "Unsubscribe"),  # no words for it: English
    ],
)
async def test_without_a_stored_locale_the_page_speaks_the_emails_then_the_browsers(
    client: httpx.AsyncClient,
    runtime: Runtime,
    token_locale: str | None,
    accept_language: str,
    lang: str,
    title: str,
    button: str,
) -> None:
    page = await client.get(
        path_of(runtime, locale=token_locale),
        headers={"Accept": BROWSER, "Accept-Language": accept_language},
    )
    assert page.status_code == 200
    assert page.text.startswith(f"<!doctype html><html lang={lang}>")
    assert f"<strong>{title}</strong>" in page.text
    assert f">{button}</button>" in page.text


# Links that do not work ---------------------------------------------------------------


def broken_paths(runtime: Runtime) -> list[str]:
    path = path_of(runtime)
    return [
        path[:-2] + ("xx" if not path.endswith("xx") else "yy"),  # forged signature
        path[: len(path) // 2],  # truncated by a mail client
        "/v1/unsubscribe/not-a-token",
    ]


async def test_a_broken_link_shows_a_page_in_a_browser_and_a_json_error_elsewhere(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    for path in broken_paths(runtime):
        as_api = await client.get(path, headers={"Accept": "application/json"})
        assert as_api.status_code == 422, path
        assert as_api.json()["error"]["field"] == "token"
        # What a mailbox provider sends for RFC 8058 one-click: no Accept at all.
        one_click = await client.post(
            path,
            content=b"List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": ""},
        )
        assert one_click.status_code == 422, path
        assert one_click.json()["error"]["code"] == "invalid"
        for method in ("GET", "POST"):
            response = await client.request(
                method, path, headers={"Accept": BROWSER, "Accept-Language": "de"}
            )
            assert response.status_code == 400, (method, path)
            assert response.headers["content-type"].startswith("text/html"), (method, path)
            assert "Dieser Link funktioniert nicht" in response.text
            assert '"error"' not in response.text
    assert await email_choices(runtime) == []

    example = await client.get("/v1/unsubscribe/example", headers={"Accept": BROWSER})
    assert example.status_code == 404
    assert "unsubscribes nobody" in example.text


async def test_a_link_to_a_mandatory_category_explains_it_cannot_be_turned_off(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    path = path_of(runtime, category="security")
    page = await client.get(path, headers={"Accept": BROWSER, "Accept-Language": "fr"})
    assert page.status_code == 400
    assert "<strong>Sécurité du compte</strong>" in page.text
    assert "ne peuvent pas être désactivés" in page.text
    as_api = await client.post(path, headers={"Accept": "application/json"})
    assert as_api.status_code == 422
    assert as_api.json()["error"]["field"] == "category"
    assert await email_choices(runtime) == []


# A link for an address the stored profile does not hold --------------------------------


async def test_a_link_for_an_address_an_event_carried_stops_that_address_not_the_person(
    client: httpx.AsyncClient, producer: dict[str, str], runtime: Runtime
) -> None:
    """A key without users:write may send one event's email to an address of its choice
    for a user whose stored address is another; following that email's link must not
    turn off the stored person's mail (another team's too), only mail to that address."""
    stored = await client.put(
        "/v1/users/u-bob", json={"email": "bob@example.com"}, headers=producer
    )
    assert stored.status_code == 200, stored.text
    carried = runtime.composer.unsubscribe_for("u-bob", "comments", "mallory@example.net")
    done = await client.post(
        urllib.parse.urlsplit(carried.url).path, data={"List-Unsubscribe": "One-Click"}
    )
    assert done.status_code == 200, done.text
    assert await email_choices(runtime) == []
    async with runtime.db.reader() as conn:
        suppressed = await runtime.suppressions.among(
            conn, ["mallory@example.net", "bob@example.com"]
        )
    assert suppressed == {"mallory@example.net": "unsubscribed"}

    # The stored address's own link still changes the person's preference.
    own = runtime.composer.unsubscribe_for("u-bob", "comments", "Bob@Example.com")
    again = await client.post(
        urllib.parse.urlsplit(own.url).path, data={"List-Unsubscribe": "One-Click"}
    )
    assert again.status_code == 200, again.text
    assert await email_choices(runtime) == [("u-bob", OPTED_OUT)]
