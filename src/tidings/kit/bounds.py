"""Bounds on the HTTP connections of a process, so that slow or idle clients cannot hold
its sockets and tasks without end.

uvicorn closes a keep-alive connection that stays idle between two requests, but it
waits for the head of a request (a *slowloris* client sends one header line now and
then) and for its body for as long as the client likes, and it answers any number of
connections. Three pieces bound that:

- ``protocol()``: uvicorn's httptools protocol, which closes a connection whose request
  head has not fully arrived within a deadline (408 if part of it came), and marks the
  requests that arrive while the process holds more connections than its cap;
- ``BodyTimeout``: ASGI middleware that ends with 408 a request whose body the client
  takes too long to send;
- ``ConnectionCap``: ASGI middleware that answers the marked requests 503, except the
  health probes, which must tell an orchestrator the truth about a busy process.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)

HEALTH_PATHS = frozenset({"/healthz", "/readyz"})
"""Answered even over the connection cap: a probe that fails would get a busy process
restarted, which makes it busier everywhere else."""

OVER_CAPACITY = "tidings.over_capacity"
"""The scope extension the protocol sets on a request that arrived over the cap."""

RETRY_AFTER_SECONDS = 5


def protocol(*, header_timeout: float, max_connections: int | None) -> type[HttpToolsProtocol]:
    """uvicorn's ``http`` protocol class with these bounds (``Config(http=...)``)."""

    class Bounded(BoundedHttpProtocol):
        header_seconds = header_timeout
        connection_cap = max_connections

    return Bounded


class BoundedHttpProtocol(HttpToolsProtocol):
    """Closes a connection whose request head takes longer than ``header_seconds``, and
    marks a request that arrives while more than ``connection_cap`` connections are open.

    The deadline runs from the moment the connection is made (a client that connects and
    says nothing is closed too) and, for a later request on a kept-alive connection, from
    its first byte; it stops when the head is complete.
    """

    header_seconds: float = 10.0
    connection_cap: int | None = None
    _head_timer: asyncio.TimerHandle | None = None
    _head_begun = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_begun = True
        if self._head_timer is None:
            self._arm_head_timer()

    def on_headers_complete(self) -> None:
        self._disarm_head_timer()
        self._head_begun = False
        cap = self.connection_cap
        if cap is not None and len(self.connections) > cap:
            self.scope.setdefault("extensions", {})[OVER_CAPACITY] = {}
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self.header_seconds, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self._head_begun:
            # Part of a request came: say why it ends, as a 408 the client can read.
            self.transport.write(
                _response(
                    408,
                    "Request Timeout",
                    "request_timeout",
                    f"The request head did not arrive within {self.header_seconds:g} s; "
                    "send the whole request at once.",
                    "headers",
                )
            )
        self.transport.close()


class BodyTimeout:
    """Ends with 408 a request whose client takes more than ``seconds`` in all to send
    its body. Only the time the application waits for the body counts: a handler that
    works between two chunks does not spend the client's time."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        left = self.seconds
        body_done = False
        started = False

        async def timed_receive() -> Message:
            nonlocal left, body_done
            if body_done:
                # What comes after the body is the disconnect, which a stream waits for
                # as long as it lasts.
                return await receive()
            began = loop.time()
            deadline.reschedule(began + left)
            try:
                message = await receive()
            finally:
                if not deadline.expired():
                    deadline.reschedule(None)
                left -= loop.time() - began
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            async with asyncio.timeout(None) as deadline:
                await self.app(scope, timed_receive, tracking_send)
        except TimeoutError:
            if not deadline.expired():
                raise
            if not started:
                await _send_error(
                    send,
                    408,
                    "request_timeout",
                    f"The request body did not arrive within {self.seconds:g} s; "
                    "send it at once, or smaller.",
                    "body",
                )


class ConnectionCap:
    """Answers 503 to a request the protocol marked as over the connection cap, unless
    it is a health probe; the connection is closed after the answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and OVER_CAPACITY in scope.get("extensions", {})
            and scope["path"] not in HEALTH_PATHS
        ):
            await _send_error(
                send,
                503,
                "too_many_connections",
                "This process holds as many connections as it may; retry in a few seconds.",
                None,
                retry_after=RETRY_AFTER_SECONDS,
            )
            return
        await self.app(scope, receive, send)


def bounded(app: ASGIApp, *, body_timeout: float) -> ASGIApp:
    """``app`` behind the connection cap and the body timeout."""
    return ConnectionCap(BodyTimeout(app, body_timeout))


def raise_open_files_limit(wanted: int) -> int:
    """Raise this process's soft limit on open files towards ``wanted`` (up to the hard
    limit), so the connection cap, not the limit, decides when a process is full: past
    the limit, accepting fails for every client, health probes included. Returns the
    soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open files limit to %d: %s", target, exc)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        log.warning(
            "the open files limit is %d, below what TIDINGS_MAX_CONNECTIONS needs (%d); "
            "raise it (ulimit -n) or lower TIDINGS_MAX_CONNECTIONS",
            soft,
            wanted,
        )
    return int(soft)


def _body(code: str, message: str, field: str | None) -> bytes:
    error: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        error["field"] = field
    return orjson.dumps({"error": error})


def _response(status: int, reason: str, code: str, message: str, field: str | None) -> bytes:
    """A whole HTTP/1.1 answer that closes the connection, for the protocol to write."""
    body = _body(code, message, field)
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


async def _send_error(
    send: Send,
    status: int,
    code: str,
    message: str,
    field: str | None,
    *,
    retry_after: int | None = None,
) -> None:
    body = _body(code, message, field)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode("ascii")),
        (b"connection", b"close"),
    ]
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode("ascii")))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
