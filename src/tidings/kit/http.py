"""HTTP plumbing shared by every router: error bodies and the request size limit."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tidings.kit import errors, json_input, outage

log = logging.getLogger(__name__)

CHECKED_JSON = "tidings.checked_json"
"""The key ``StrictJson`` sets in the scope of a request whose JSON body it checked: the
route need not check its values again."""


def install_error_handlers(app: FastAPI, outages: outage.Outages | None = None) -> None:
    """Every error leaves as ``{"error": {"code", "message", "field"?}}``; one that says
    the database cannot serve now is a 503 with ``Retry-After``, logged once per outage
    by ``outages``."""
    outages = outages or outage.Outages()

    @app.exception_handler(errors.TidingsError)
    async def _tidings_error(_request: Request, exc: errors.TidingsError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers())

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(invalid(exc.errors()).body(), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(
            {"error": {"code": code, "message": str(exc.detail)}}, status_code=exc.status_code
        )

    async def _storage_error(_request: Request, exc: Exception) -> JSONResponse:
        unavailable = outages.unavailable(exc)
        if unavailable is None:
            raise exc  # a bug: on to the handler of last resort below
        return JSONResponse(
            unavailable.body(), status_code=unavailable.status, headers=unavailable.headers()
        )

    # Registered by class: the handler of any Exception runs last, and Starlette then
    # raises again for the server to log a traceback, once per request. An outage is
    # logged once, by ``outages``.
    for kind in (sa.exc.SQLAlchemyError, sqlite3.Error, OSError):
        app.add_exception_handler(kind, _storage_error)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        return _internal(exc)


def _internal(exc: Exception) -> JSONResponse:
    """The 500 for a failure that is neither the caller's nor an outage: a bug."""
    log.exception("unhandled error", exc_info=exc)
    return JSONResponse(
        {
            "error": {
                "code": "internal",
                "message": "Tidings failed to handle this request; nothing was accepted. "
                "Retry it with the same idempotency key.",
            }
        },
        status_code=500,
    )


ERROR_SCHEMA: dict[str, Any] = {
    "title": "Error",
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "description": "Stable, machine-readable code"},
                "message": {"type": "string", "description": "What went wrong and what to do"},
                "field": {"type": ["string", "null"], "description": "The offending field"},
                "problems": {
                    "type": "array",
                    "items": {"type": "object"},
                    "description": "Every problem found, for a request with several",
                },
            },
        }
    },
}
"""The JSON schema of every error body."""


def document_errors(app: FastAPI) -> None:
    """Make the OpenAPI document say what Tidings answers when a request fails: every
    operation may answer a 4xx with the ``Error`` body (422 included, which FastAPI
    would otherwise describe with its own body), and a 503 while the database is out."""
    render = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = render()
        components = document.setdefault("components", {}).setdefault("schemas", {})
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        components["Error"] = ERROR_SCHEMA
        error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
        for operations in document.get("paths", {}).values():
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                for status, response in responses.items():
                    if status.startswith("4"):
                        response["content"] = error
                responses.setdefault(
                    "4XX",
                    {"description": "The request was refused; the body says why", "content": error},
                )
                responses.setdefault(
                    "503",
                    {
                        "description": "The database does not answer just now: retry after "
                        "the seconds in Retry-After",
                        "content": error,
                    },
                )
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def invalid(problems_of: Sequence[Any]) -> errors.Invalid:
    """The ``Invalid`` error for pydantic's list of errors (``ValidationError.errors()``),
    with the same codes, fields and messages as an HTTP request's."""
    problems = [_problem(error) for error in problems_of]
    first = problems[0]
    error = errors.Invalid(first["message"], field=first["field"], problems=problems)
    if any(p["code"] == "malformed_json" for p in problems):
        error.code = "malformed_json"
    return error


def _problem(error: Any) -> dict[str, Any]:
    location = [str(part) for part in error.get("loc", ())]
    source = location[0] if location else "body"
    path = location[1:] if source in ("body", "query", "path", "header") else location
    if error.get("type") == "json_invalid":
        reason = error.get("ctx", {}).get("error", "parse error")
        return {
            "code": "malformed_json",
            "field": None,
            "message": f"The body is not valid JSON: {reason}.",
        }
    field = ".".join(path) if path else source
    message = str(error.get("msg", "invalid value"))
    if error.get("type") == "missing":
        message = f"'{field}' is required"
    elif error.get("type") == "extra_forbidden":
        message = f"'{field}' is not a field this endpoint accepts"
    return {"code": str(error.get("type", "invalid")), "field": field, "message": message}


class BodySizeLimit:
    """Answers 413 to a request body over ``max_bytes``, declared or streamed."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await self._reject(send)
                return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._reject(send)

    async def _reject(self, send: Send) -> None:
        body = errors.TooLarge(
            f"The request body is larger than {self.max_bytes} bytes; send smaller batches.",
            field="body",
        ).body()
        await JSONResponse(body, status_code=413)({"type": "http"}, _no_receive, send)


class _TooLarge(Exception):
    pass


class RefuseNul:
    """Answers 422 to a request with NUL in its path or query.

    PostgreSQL cannot store NUL in text, and what one engine keeps the other must keep
    too: the character is refused at the edge, for every endpoint alike (``StrictJson``
    does the same for JSON bodies, after decoding them).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            where = _nul_in(scope)
            if where is not None:
                await _answer(
                    send,
                    errors.Invalid(
                        f"The request's {where} contains the NUL character (\\u0000), "
                        "which Tidings does not store.",
                        field=where,
                    ),
                )
                return
        await self.app(scope, receive, send)


def _nul_in(scope: Scope) -> str | None:
    if "\x00" in scope.get("path", ""):
        return "path"
    query: bytes = scope.get("query_string", b"")
    if b"%00" in query.lower() or b"\x00" in query:
        return "query"
    return None


class StrictJson:
    """Decodes and checks every JSON request body before a route parses it: UTF-8 only
    (415 otherwise), and no value either engine would store differently or refuse (see
    ``json_input.check``); a 422 names the offending field.

    Checking the decoded text, not the bytes, matters: a NUL escaped as ``\\u0000`` or
    sent in UTF-16 is one only after decoding.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        content_type = next((v for k, v in scope.get("headers", ()) if k == b"content-type"), b"")
        if b"json" not in content_type.lower():
            await self.app(scope, receive, send)
            return
        # JSON is parsed whole anyway: read it first (BodySizeLimit bounds it), look, then
        # hand the same bytes on (the route's parser skips a UTF-8 byte order mark too).
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([message], receive), send)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        try:
            problem = json_input.media_type_problem(content_type)
            if problem is not None:
                raise problem
            if body:
                text = json_input.decode(body)
                # Most bodies hold nothing the checks could refuse, which the bytes
                # show: those are parsed once, by the route.
                if not json_input.plainly_storable(body.removeprefix(json_input.UTF8_BOM)):
                    json_input.parse(text)
        except errors.TidingsError as exc:
            await _answer(send, exc)
            return
        scope[CHECKED_JSON] = True
        whole: Message = {"type": "http.request", "body": body, "more_body": False}
        await self.app(scope, _replay([whole], receive), send)


async def _answer(send: Send, error: errors.TidingsError) -> None:
    """Send ``error`` as the response, from a middleware (outside the routes' handlers)."""
    response = JSONResponse(error.body(), status_code=error.status, headers=error.headers())
    await response({"type": "http"}, _no_receive, send)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A ``receive`` that gives ``messages`` again, then the real one's."""
    pending = list(messages)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed


async def _no_receive() -> Message:  # pragma: no cover - a response never reads
    return {"type": "http.disconnect"}
