"""HTTP for the email channel: one-click unsubscribe, template previews, the mail catcher."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field

from tidings import catalog
from tidings.auth.dependencies import MailboxReader, Producer
from tidings.email import unsubscribe_page, unsubscribe_tokens
from tidings.email.composer import PREVIEW_UNSUBSCRIBE_PATH, EmailComposer
from tidings.email.suppressions import SuppressionCause, normalise_address
from tidings.kit import errors
from tidings.preferences.service import PreferencesService
from tidings.users.service import UsersService

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


@dataclass(frozen=True)
class _Unsubscribing:
    """A token that checked out: what it claims, its category, the page's language."""

    claim: unsubscribe_tokens.UnsubscribeClaim
    category: catalog.Category
    language: unsubscribe_page.Language


_EXAMPLE_TOKEN = PREVIEW_UNSUBSCRIBE_PATH.rsplit("/", 1)[1]


async def _unsubscribing(request: Request, token: str) -> _Unsubscribing | HTMLResponse:
    """What ``token`` unsubscribes from, or the page that says why it cannot.

    A client that asks for HTML (a browser) gets a page for a broken, forged or
    mandatory link; any other (an API client, a mailbox provider's one-click POST) the
    JSON error.

    Raises:
        errors.Invalid: the token is broken or forged, or names a mandatory category.
    """
    html = unsubscribe_page.wants_html(request.headers.get("accept"))
    secret: str = request.app.state.settings.signing_secret
    try:
        claim = unsubscribe_tokens.verify(secret, token)
    except errors.Invalid:
        if not html:
            raise
        language = await _language(request, None)
        if token == _EXAMPLE_TOKEN:
            return HTMLResponse(unsubscribe_page.example(language), status_code=404)
        return HTMLResponse(unsubscribe_page.broken(language), status_code=400)
    types: catalog.Catalog = request.app.state.runtime.catalog
    category = types.category(claim.category)
    if category.mandatory and not html:
        raise errors.Invalid(
            f"Messages about {claim.category!r} cannot be turned off.", field="category"
        )
    language = await _language(request, claim)
    if category.mandatory:
        return HTMLResponse(unsubscribe_page.mandatory(language, category), status_code=400)
    return _Unsubscribing(claim, category, language)


async def _language(
    request: Request, claim: unsubscribe_tokens.UnsubscribeClaim | None
) -> unsubscribe_page.Language:
    """The recipient's stored locale, else the email's, else the browser's languages."""
    candidates: list[str | None] = []
    if claim is not None:
        users: UsersService = request.app.state.users
        # A recipient the event carried may never have been stored.
        with contextlib.suppress(errors.NotFound):
            candidates.append((await users.get_profile(claim.user_id)).locale)
        candidates.append(claim.locale)
    candidates += unsubscribe_page.accepted_languages(request.headers.get("accept-language"))
    return unsubscribe_page.choose(candidates)


@router.get("/v1/unsubscribe/{token}", response_class=HTMLResponse)
async def confirm_unsubscribe(request: Request, token: str) -> HTMLResponse:
    """A small confirmation page with one button; nothing changes until it is pressed."""
    found = await _unsubscribing(request, token)
    if isinstance(found, HTMLResponse):
        return found
    page = unsubscribe_page.confirm(
        found.language, found.category, found.claim.email, f"/v1/unsubscribe/{token}"
    )
    return HTMLResponse(page)


@router.post("/v1/unsubscribe/{token}", response_class=HTMLResponse)
async def unsubscribe(
    request: Request,
    token: str,
    preferences: Annotated[PreferencesService, Depends(_preferences)],
) -> HTMLResponse:
    """One-click unsubscribe (RFC 8058): no login, no second step."""
    found = await _unsubscribing(request, token)
    if isinstance(found, HTMLResponse):
        return found
    claim = found.claim
    if await _holds_another_address(request, claim):
        await _suppress(request, claim)
    else:
        await preferences.set_channel(
            claim.user_id, claim.category, "email", enabled=False, source="unsubscribe_link"
        )
    return HTMLResponse(unsubscribe_page.done(found.language, found.category))


async def _holds_another_address(
    request: Request, claim: unsubscribe_tokens.UnsubscribeClaim
) -> bool:
    """Whether the user's stored profile holds an address other than the link's.

    Such a link came with an email to an address an event carried for that event only
    (from a key that may not change stored profiles). Its holder may stop mail to that
    address, but not change the preferences of the person the stored profile belongs
    to: otherwise any key could turn off another team's mail to that person by sending
    one email to an address of its own choosing and following its link."""
    users: UsersService = request.app.state.users
    try:
        stored = (await users.get_profile(claim.user_id)).email
    except errors.NotFound:
        return False
    if stored is None or claim.email is None:
        return False
    return normalise_address(stored) != normalise_address(claim.email)


async def _suppress(request: Request, claim: unsubscribe_tokens.UnsubscribeClaim) -> None:
    assert claim.email is not None  # a link without an address never gets here
    runtime = request.app.state.runtime
    async with runtime.db.transaction() as conn:
        await runtime.suppressions.add(
            conn,
            claim.email,
            SuppressionCause.UNSUBSCRIBED,
            detail=f"one-click unsubscribe from {claim.category!r} for {claim.user_id!r}",
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
