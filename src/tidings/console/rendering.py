"""The console's HTTP plumbing: templates, security headers, sign-in, form input."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import urllib.parse
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse

from tidings.auth.keys import ApiKey
from tidings.console import sessions
from tidings.kit import clock, errors

if TYPE_CHECKING:
    from tidings.app.runtime import Runtime

LOGIN = "/console/login"
SECURITY_HEADERS = {
    # Email previews sit in sandboxed srcdoc frames, which inherit this policy: their
    # inline styles and remote images are allowed, scripts only from the console itself.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src * data:; frame-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
        "form-action 'self'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class Operator:
    """The signed-in operator of a console request."""

    session: sessions.Session
    key: ApiKey
    csrf: str


def runtime(request: Request) -> Runtime:
    found: Runtime = request.app.state.runtime
    return found


def secret(request: Request) -> str:
    return runtime(request).settings.signing_secret


async def signed_in(request: Request) -> Operator | None:
    """The operator behind the request's session cookie, while their key is an active
    operator's key; None otherwise."""
    found = runtime(request)
    session = sessions.unseal(
        secret(request), request.cookies.get(sessions.COOKIE), found.clock.now()
    )
    if session is None or await sessions.ended(
        found.counters, found.db, session, found.clock.now()
    ):
        return None
    for key in await found.auth.list_keys():
        if key.id == session.key_id and key.revoked_at is None and key.is_operator:
            return Operator(session, key, sessions.csrf_token(secret(request), session))
    return None


def to_login(request: Request) -> RedirectResponse:
    """Send the browser to the sign-in page, to come back here afterwards (to the
    overview after a form: its action is not a page)."""
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if request.method != "GET":
        target = "/console"
    return RedirectResponse(f"{LOGIN}?{urllib.parse.urlencode({'next': target})}", 303)


def safe_next(target: str | None) -> str:
    """Where to go after signing in: only a console page, never another site."""
    if target and target.startswith("/console") and not target.startswith("//"):
        return target
    return "/console"


def page(
    request: Request,
    template: str,
    operator: Operator | None,
    *,
    status: int = 200,
    **context: Any,
) -> HTMLResponse:
    """A console page rendered from ``template`` with the security headers."""
    html = (
        _environment()
        .get_template(template)
        .render(
            operator=operator,
            path=request.url.path,
            has_mailbox=runtime(request).mail_catcher is not None,
            **context,
        )
    )
    return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)


def csrf_ok(request: Request, operator: Operator, presented: str | None) -> bool:
    """Whether ``presented`` is the CSRF token of the operator's session."""
    return sessions.csrf_ok(secret(request), operator.session, presented)


def csrf_error() -> errors.Forbidden:
    return errors.Forbidden(
        "This form is stale or came from another site: reload the page and try again.",
        field="csrf",
    )


def failed(request: Request, operator: Operator, exc: errors.TidingsError) -> HTMLResponse:
    """A page saying what went wrong, with the error's status."""
    return page(request, "error.html", operator, status=exc.status, error=exc)


async def form(request: Request) -> dict[str, str]:
    """The fields of a URL-encoded form body (the last value of each)."""
    body = (await request.body()).decode("utf-8", errors="replace")
    return {name: values[-1] for name, values in urllib.parse.parse_qs(body).items()}


def text(value: str | None) -> str | None:
    """A search field: None when left empty."""
    value = (value or "").strip()
    return value or None


def when(value: str | None, field: str) -> dt.datetime | None:
    """A time from a search form (``datetime-local`` or ISO 8601); without a zone, UTC.

    Raises:
        errors.Invalid: not a time, or one outside the calendar once taken to UTC.
    """
    value = text(value)
    if value is None:
        return None
    try:
        at = dt.datetime.fromisoformat(value)
    except ValueError:
        raise errors.Invalid(
            f"{value!r} is not a time: use 2026-01-31T09:30 (UTC) or ISO 8601.", field=field
        ) from None
    return clock.in_utc(at, field)


@functools.cache
def asset(name: str) -> tuple[bytes, str]:
    """A file shipped in ``tidings/console/static`` and its ETag."""
    content = (resources.files("tidings.console") / "static" / name).read_bytes()
    return content, '"' + hashlib.sha256(content).hexdigest()[:32] + '"'


def _shown_time(at: dt.datetime | None) -> str:
    if at is None:
        return ""
    # Milliseconds: a timeline's steps are often within the same second.
    return at.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)


@functools.cache
def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("tidings.console", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["at"] = _shown_time
    environment.filters["pretty"] = _pretty
    environment.filters["query"] = _query
    return environment


def _query(params: dict[str, Any], **changes: Any) -> str:
    """``params`` with ``changes``, as a query string without its empty fields."""
    merged = {**params, **changes}
    return urllib.parse.urlencode({k: v for k, v in merged.items() if v not in (None, "")})
