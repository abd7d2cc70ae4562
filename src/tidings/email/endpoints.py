"""HTTP for the email channel: one-click unsubscribe, template previews, the mail catcher."""

from __future__ import annotations

import html
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field

from tidings import catalog
from tidings.auth.dependencies import MailboxReader, Producer
from tidings.email import unsubscribe_tokens
from tidings.email.composer import EmailComposer
from tidings.kit import errors
from tidings.preferences.service import PreferencesService

router = APIRouter(tags=["email"])


class PreviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data: dict[str, Any] = Field(default_factory=dict)
    locale: str | None = None
    actor: dict[str, Any] | None = None
    recipient: dict[str, Any] | None = None


class PreviewOut(BaseModel):
    subject: str
    html: str
    text: str
    locale: str


class MailboxOut(BaseModel):
    messages: list[dict[str, Any]]


async def _preferences(request: Request) -> PreferencesService:
    service: PreferencesService = request.app.state.preferences
    return service


async def _composer(request: Request) -> EmailComposer:
    composer: EmailComposer = request.app.state.composer
    return composer


def _claim(request: Request, token: str) -> unsubscribe_tokens.UnsubscribeClaim:
    secret: str = request.app.state.settings.signing_secret
    claim = unsubscribe_tokens.verify(secret, token)
    types: catalog.Catalog = request.app.state.runtime.catalog
    if types.category(claim.category).mandatory:
        raise errors.Invalid(
            f"Messages about {claim.category!r} cannot be turned off.", field="category"
        )
    return claim


@router.get("/v1/unsubscribe/{token}", response_class=HTMLResponse)
async def unsubscribe_page(request: Request, token: str) -> HTMLResponse:
    """A small confirmation page with one button; nothing changes until it is pressed."""
    claim = _claim(request, token)
    return HTMLResponse(
        _page(
            "Unsubscribe",
            f"<p>Stop emails about <strong>{html.escape(claim.category)}</strong>"
            + (f" to {html.escape(claim.email)}" if claim.email else "")
            + "?</p>"
            f'<form method="post" action="/v1/unsubscribe/{html.escape(token)}">'
            '<button type="submit" name="List-Unsubscribe" value="One-Click">Unsubscribe</button>'
            "</form>",
        )
    )


@router.post("/v1/unsubscribe/{token}", response_class=HTMLResponse)
async def unsubscribe(
    request: Request,
    token: str,
    preferences: Annotated[PreferencesService, Depends(_preferences)],
) -> HTMLResponse:
    """One-click unsubscribe (RFC 8058): no login, no second step."""
    claim = _claim(request, token)
    await preferences.set_channel(
        claim.user_id, claim.category, "email", enabled=False, source="unsubscribe_link"
    )
    return HTMLResponse(
        _page(
            "Unsubscribed",
            f"<p>You will no longer get emails about "
            f"<strong>{html.escape(claim.category)}</strong>.</p>",
        )
    )


@router.post("/v1/catalog/{type_key}/preview", response_model=PreviewOut)
async def preview(
    request: Request,
    type_key: str,
    body: PreviewIn,
    key: Producer,
    composer: Annotated[EmailComposer, Depends(_composer)],
) -> PreviewOut:
    """The rendered subject, HTML and text of a type's email for a payload and locale;
    for a key whose scopes cover the type (or an operator key)."""
    types: catalog.Catalog = request.app.state.runtime.catalog
    ntype = types.get(type_key)
    if ntype is None:
        raise errors.NotFound(f"No notification type {type_key!r}.", field="type")
    if not key.may_read(type_key):
        raise errors.Forbidden(
            f"The key {key.name!r} may not see {type_key!r}; its scopes are "
            f"{', '.join(key.scopes)}.",
            field="type",
        )
    if "email" not in ntype.channels:
        raise errors.Invalid(f"{type_key!r} has no email channel.", field="type")
    problems = ntype.validate_payload(body.data)
    if problems:
        raise errors.Invalid(problems[0].message, field=problems[0].path)
    context = {
        "data": body.data,
        "actor": body.actor,
        "recipient": body.recipient or {"id": "preview", "locale": body.locale},
        "event": {"id": "preview", "type": type_key, "tenant": "default"},
    }
    try:
        rendered = composer.preview(ntype, context, body.locale)
    except catalog.RenderError as exc:
        raise errors.Invalid(exc.message, field=exc.field) from None
    return PreviewOut(
        subject=rendered.subject, html=rendered.html, text=rendered.text, locale=rendered.locale
    )


@router.get("/v1/dev/mailbox", response_model=MailboxOut)
async def mailbox(
    request: Request,
    _key: MailboxReader,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    to: str | None = None,
) -> MailboxOut:
    """Messages the built-in mail catcher received, newest first (embedded default only).

    They hold every recipient's mail, password resets and unsubscribe links included, so
    only a key with ``dev:mailbox`` (or ``admin``) reads them."""
    catcher = request.app.state.mail_catcher
    if catcher is None:
        raise errors.NotFound(
            "The mail catcher is off: this deployment sends through a real provider.",
            field="email_provider",
        )
    return MailboxOut(messages=await catcher.list(limit=limit, recipient=to))


def _page(title: str, body: str) -> str:
    return (
        "<!doctype html><html lang=en><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f"<title>{title}</title>"
        "<style>body{font:16px/1.5 system-ui,sans-serif;max-width:32rem;margin:4rem auto;"
        "padding:0 1rem;color:#222}button{font:inherit;padding:.5rem 1.25rem;border:0;"
        "border-radius:.375rem;background:#2f54eb;color:#fff;cursor:pointer}</style>"
        f"<h1>{title}</h1>{body}</html>"
    )
