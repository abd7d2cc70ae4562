"""HTTP of the console: its pages, the chart numbers and the template preview."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from pydantic import BaseModel, ConfigDict, Field

from tidings import catalog, channels
from tidings.console import dead_letter_pages, preview, rehearsal, repository, sessions, stats
from tidings.console.rendering import (
    Operator,
    asset,
    csrf_error,
    csrf_ok,
    failed,
    form,
    page,
    runtime,
    safe_next,
    secret,
    signed_in,
    text,
    to_login,
    when,
)
from tidings.kit import errors

router = APIRouter(prefix="/console", include_in_schema=False)

PAGE_SIZE = 50
DELIVERY_STATES = (
    "planned",
    "scheduled",
    "sent",
    "delivered",
    "failed",
    "bounced",
    "suppressed",
    "digested",
)
CHANNELS = channels.names()
Search = Annotated[str | None, Query(max_length=255)]
Limit = Annotated[int, Query(ge=1, le=500)]


class PreviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data: dict[str, Any] = Field(default_factory=dict)
    actor: dict[str, Any] | None = None
    locale: str | None = Field(default=None, max_length=35)


@router.get("/static/{name}")
async def static(name: Annotated[str, Path(pattern=r"^console\.(js|css)$")]) -> Response:
    """The console's script and stylesheet."""
    content, etag = asset(name)
    kind = "text/javascript" if name.endswith(".js") else "text/css"
    return Response(
        content,
        media_type=f"{kind}; charset=utf-8",
        headers={"ETag": etag, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )


@router.get("/login")
async def login_page(request: Request, next: str | None = None) -> Response:
    """Sign in by pasting an operator's API key."""
    if await signed_in(request) is not None:
        return RedirectResponse(safe_next(next), 303)
    return page(request, "login.html", None, next=safe_next(next), problem=None)


@router.post("/login")
async def login(request: Request) -> Response:
    """Check the key; with the ``admin`` scope, start a session in an HttpOnly cookie."""
    fields = await form(request)
    target = safe_next(fields.get("next"))
    try:
        key = await runtime(request).auth.authenticate_key(f"Bearer {fields.get('key', '')}")
    except errors.Unauthenticated:
        problem = "That is not an active Tidings API key."
        return page(request, "login.html", None, status=401, next=target, problem=problem)
    if not key.is_operator:
        problem = "This key has no 'admin' scope: the console needs an operator's key."
        return page(request, "login.html", None, status=403, next=target, problem=problem)
    session = sessions.start(key.id, runtime(request).clock.now())
    response = RedirectResponse(target, 303)
    response.set_cookie(
        sessions.COOKIE,
        sessions.seal(secret(request), session),
        max_age=int(sessions.LIFETIME.total_seconds()),
        path="/console",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    """End the session, here and for any copy of its cookie."""
    operator = await signed_in(request)
    if operator is not None:
        if not csrf_ok(request, operator, (await form(request)).get("csrf")):
            return failed(request, operator, csrf_error())
        found = runtime(request)
        await sessions.end(found.counters, found.db, operator.session, found.clock.now())
    response = RedirectResponse("/console/login", 303)
    response.delete_cookie(sessions.COOKIE, path="/console")
    return response


@router.get("")
async def overview(request: Request) -> Response:
    """Live charts and the counts an operator checks first."""
    operator = await signed_in(request)
    if operator is None:
        return to_login(request)
    found = runtime(request)
    snapshot = await stats.snapshot(found.db, found.clock.now())
    async with found.db.reader() as conn:
        recent, _ = await repository.search_events(conn, repository.EventSearch(), None, 10)
    dead = await found.dead_letters.count()
    return page(request, "overview.html", operator, stats=snapshot, recent=recent, dead=dead)


@router.get("/api/stats")
async def stats_json(request: Request) -> Response:
    """The numbers of the overview's charts (polled by its script)."""
    if await signed_in(request) is None:
        return _unauthenticated()
    found = runtime(request)
    return JSONResponse(await stats.snapshot(found.db, found.clock.now()))


@router.get("/events")
async def events_page(
    request: Request,
    user: Search = None,
    type: Search = None,
    since: Search = None,
    until: Search = None,
    cursor: Search = None,
    limit: Limit = PAGE_SIZE,
) -> Response:
    """Events, newest first, searchable by recipient, type and time."""
    operator = await signed_in(request)
    if operator is None:
        return to_login(request)
    params = {"user": user, "type": type, "since": since, "until": until, "limit": _limit(limit)}
    try:
        where = repository.EventSearch(
            user=text(user),
            type=text(type),
            since=when(since, "since"),
            until=when(until, "until"),
        )
        async with runtime(request).db.reader() as conn:
            rows, more = await repository.search_events(conn, where, text(cursor), limit)
    except errors.TidingsError as exc:
        return _search_failed(request, operator, "events.html", params, exc)
    return page(request, "events.html", operator, params=params, rows=rows, more=more, problem=None)


@router.get("/deliveries")
async def deliveries_page(
    request: Request,
    user: Search = None,
    type: Search = None,
    state: Search = None,
    channel: Search = None,
    event: Search = None,
    since: Search = None,
    until: Search = None,
    cursor: Search = None,
    limit: Limit = PAGE_SIZE,
) -> Response:
    """Deliveries of every user, newest first, searchable by user, type, state, channel,
    event and time."""
    operator = await signed_in(request)
    if operator is None:
        return to_login(request)
    params = {
        "user": user,
        "type": type,
        "state": state,
        "channel": channel,
        "event": event,
        "since": since,
        "until": until,
        "limit": _limit(limit),
    }
    try:
        where = repository.DeliverySearch(
            user=text(user),
            type=text(type),
            state=text(state),
            channel=text(channel),
            event=text(event),
            since=when(since, "since"),
            until=when(until, "until"),
        )
        async with runtime(request).db.reader() as conn:
            rows, more = await repository.search_deliveries(conn, where, text(cursor), limit)
    except errors.TidingsError as exc:
        return _search_failed(request, operator, "deliveries.html", params, exc)
    return page(
        request,
        "deliveries.html",
        operator,
        params=params,
        rows=rows,
        more=more,
        problem=None,
        states=DELIVERY_STATES,
        channels=CHANNELS,
    )


@router.get("/deliveries/{delivery_id}")
async def delivery_page(
    request: Request, delivery_id: Annotated[str, Path(max_length=64)]
) -> Response:
    """One delivery's timeline: every transition, when, by which stage and attempt, why;
    for an email the mail catcher holds, a link to it."""
    operator = await signed_in(request)
    if operator is None:
        return to_login(request)
    try:
        found = await runtime(request).timelines.delivery(delivery_id, operator.key)
    except errors.TidingsError as exc:
        return failed(request, operator, exc)
    caught = None
    if found.get("channel") == "email" and runtime(request).mail_catcher is not None:
        async with runtime(request).db.reader() as conn:
            caught = await repository.caught_for_delivery(conn, delivery_id)
    return page(request, "delivery.html", operator, delivery=found, caught=caught)


@router.get("/catalog")
async def catalog_page(request: Request) -> Response:
    """Every notification type of the catalog."""
    operator = await signed_in(request)
    if operator is None:
        return to_login(request)
    types = sorted(runtime(request).catalog, key=lambda t: t.key)
    return page(request, "catalog.html", operator, types=types)


@router.get("/catalog/{type_key}")
async def type_page(
    request: Request,
    type_key: Annotated[str, Path(max_length=200)],
    locale: Search = None,
) -> Response:
    """One type with a live preview of its in-app item and email, per locale."""
    operator = await signed_in(request)
    if operator is None:
        return to_login(request)
    found = runtime(request)
    ntype = found.catalog.get(type_key)
    if ntype is None:
        return failed(request, operator, _no_type(type_key))
    data = ntype.example or {}
    try:
        shown: dict[str, Any] | None = preview.render(
            ntype, found.composer, data, preview.DEFAULT_ACTOR, text(locale)
        )
        problem = None
    except catalog.RenderError as exc:
        shown, problem = None, f"{exc.field}: {exc.message}"
    return page(
        request,
        "catalog_type.html",
        operator,
        ntype=ntype,
        data=data,
        actor=preview.DEFAULT_ACTOR,
        locale=text(locale) or "",
        locales=sorted(ntype.email_locales),
        shown=shown,
        problem=problem,
    )


@router.post("/api/preview/{type_key}")
async def preview_json(
    request: Request,
    type_key: Annotated[str, Path(max_length=200)],
    body: PreviewIn,
    x_csrf_token: Annotated[str | None, Header()] = None,
) -> Response:
    """A type's in-app item and email rendered for an edited payload (the preview's
    script)."""
    operator = await signed_in(request)
    if operator is None:
        return _unauthenticated()
    if not csrf_ok(request, operator, x_csrf_token):
        return _error_json(csrf_error())
    found = runtime(request)
    ntype = found.catalog.get(type_key)
    if ntype is None:
        return _error_json(_no_type(type_key))
    try:
        shown = preview.render(ntype, found.composer, body.data, body.actor, body.locale)
    except catalog.RenderError as exc:
        return _error_json(errors.Invalid(exc.message, field=exc.field))
    return JSONResponse(shown)


@router.get("/mailbox")
async def mailbox_page(request: Request, to: Search = None) -> Response:
    """The messages the built-in mail catcher holds, newest first."""
    operator = await signed_in(request)
    if operator is None:
        return to_login(request)
    catcher = runtime(request).mail_catcher
    if catcher is None:
        return failed(request, operator, _no_mailbox())
    messages = await catcher.list(limit=100, recipient=text(to))
    return page(request, "mailbox.html", operator, messages=messages, to=text(to) or "")


@router.get("/mailbox/{message_id}")
async def message_page(
    request: Request, message_id: Annotated[str, Path(max_length=64)]
) -> Response:
    """One caught message: its HTML (sandboxed), its text and its source."""
    operator = await signed_in(request)
    if operator is None:
        return to_login(request)
    found = runtime(request)
    if found.mail_catcher is None:
        return failed(request, operator, _no_mailbox())
    async with found.db.reader() as conn:
        row = await repository.caught_message(conn, message_id)
    if row is None:
        return failed(request, operator, errors.NotFound(f"No message {message_id!r}.", field="id"))
    return page(request, "message.html", operator, row=row, parts=preview.parts_of(row["raw"]))


def _search_failed(
    request: Request,
    operator: Operator,
    template: str,
    params: dict[str, Any],
    exc: errors.TidingsError,
) -> HTMLResponse:
    return page(
        request,
        template,
        operator,
        status=exc.status,
        params=params,
        rows=[],
        more=None,
        problem=exc.message,
        states=DELIVERY_STATES,
        channels=CHANNELS,
    )


def _limit(limit: int) -> int | None:
    """The page size to carry into the next page's link; None for the default."""
    return None if limit == PAGE_SIZE else limit


def _no_type(type_key: str) -> errors.NotFound:
    return errors.NotFound(f"No notification type {type_key!r}.", field="type")


def _no_mailbox() -> errors.NotFound:
    return errors.NotFound(
        "The mail catcher is off: this deployment sends through a real provider.",
        field="email_provider",
    )


def _unauthenticated() -> JSONResponse:
    return _error_json(errors.Unauthenticated("Sign in to the console first.", field="session"))


def _error_json(exc: errors.TidingsError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status)


router.include_router(dead_letter_pages.router)
router.include_router(rehearsal.router)
