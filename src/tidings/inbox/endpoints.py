"""HTTP for the end user's inbox, under ``/v1/me``: list, count, flag, and a live stream."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import anyio
import orjson
from fastapi import APIRouter, Depends, Query, Request
from sse_starlette import EventSourceResponse

from tidings.auth import tokens
from tidings.auth.dependencies import EndUser
from tidings.inbox import schemas
from tidings.inbox.service import InboxService
from tidings.kit import errors
from tidings.kit.live import CLOSED, RECOUNT, LiveHub

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/me", tags=["inbox"])


async def inbox_service(request: Request) -> InboxService:
    service: InboxService = request.app.state.inbox
    return service


Inbox = Annotated[InboxService, Depends(inbox_service)]

_SSE_EVENT: dict[str, Any] = {
    "type": "object",
    "required": ["event", "data"],
    "properties": {
        "event": {"type": "string", "description": "counts, item, …"},
        "data": {"type": "string", "description": "The event's JSON"},
    },
}
"""One Server-Sent Event of the live stream."""

EXPIRED = "expired"
"""The last event of a stream whose token stopped being accepted."""
PING_SECONDS = 20
"""A comment line this often keeps proxies from closing an idle stream."""
STREAM_RETRY_SECONDS = 10


class TooManyStreams(errors.Unavailable):
    """The process holds ``max_streams`` live streams already."""

    code = "too_many_streams"

    def headers(self) -> dict[str, str] | None:
        return {"Retry-After": str(STREAM_RETRY_SECONDS)}


@router.get("/inbox", response_model=schemas.Page)
async def list_items(
    user: EndUser,
    inbox: Inbox,
    status: Literal["all", "unread"] = "all",
    archived: bool = False,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> schemas.Page:
    """Your items, newest first; pass ``next_cursor`` back as ``cursor`` for the next page."""
    return await inbox.page(
        user, cursor=cursor, limit=limit, unread_only=status == "unread", archived=archived
    )


@router.get("/inbox/counts", response_model=schemas.Counts)
async def counts(user: EndUser, inbox: Inbox) -> schemas.Counts:
    """Exact unread, unseen and total counts of items that are not archived."""
    return await inbox.counts(user)


@router.post("/inbox/mark", response_model=schemas.Marked)
async def mark_many(body: schemas.MarkMany, user: EndUser, inbox: Inbox) -> schemas.Marked:
    """Set or clear flags on the listed items, or on all your items when ``ids`` is left out."""
    return await inbox.mark(user, body.ids, body)


@router.get(
    "/inbox/stream",
    response_class=EventSourceResponse,
    responses={
        200: {"content": {"text/event-stream": {"schema": _SSE_EVENT}}},
        503: {"description": "This process holds as many streams as it may; retry later"},
    },
)
async def stream(request: Request, user: EndUser, inbox: Inbox) -> EventSourceResponse:
    """Server-Sent Events: ``counts`` at once, then ``item`` and ``counts`` as they change.

    The stream ends with ``expired`` when the token stops being accepted (ask the
    application for a new one and open a new stream with it), or with ``closed`` when
    the same user opened more streams than a process keeps (the oldest closes).
    """
    hub: LiveHub = request.app.state.live
    limit = request.app.state.settings.max_streams
    if hub.streams >= limit:
        raise TooManyStreams(
            f"This server holds {limit} live streams already; retry in a moment "
            "(the inbox API itself still answers)."
        )
    loop = asyncio.get_running_loop()
    until = tokens.accepted_until(_presented_token(request))
    expires = loop.time() + (until - dt.datetime.now(dt.UTC)).total_seconds()
    shutting_down = anyio.Event()

    async def events() -> AsyncIterator[dict[str, Any]]:
        async with hub.subscribe(user) as queue:
            # Counted after subscribing, so nothing falls between the count and the stream.
            initial = await inbox.counts(user)
            yield {"event": "counts", "data": initial.model_dump_json()}
            farewell = asyncio.ensure_future(shutting_down.wait())
            try:
                while (message := await _next_message(queue, farewell, expires)) is not None:
                    if message["event"] == RECOUNT:
                        try:
                            counts = await inbox.counts(user)
                        except Exception:
                            # Live push is best effort: the next change, or the next
                            # connection, brings the counts.
                            log.warning("live counts for a stream failed", exc_info=True)
                            continue
                        yield {"event": "counts", "data": counts.model_dump_json()}
                        continue
                    data = orjson.dumps(message["data"]).decode()
                    yield {"event": message["event"], "data": data}
                    if message["event"] in (CLOSED, EXPIRED):
                        return
            finally:
                farewell.cancel()

    # On server shutdown the stream ends cleanly; EventSource reconnects by itself.
    return EventSourceResponse(
        events(), ping=PING_SECONDS, shutdown_event=shutting_down, shutdown_grace_period=1.0
    )


async def _next_message(
    queue: asyncio.Queue[dict[str, Any]], farewell: asyncio.Future[Any], expires: float
) -> dict[str, Any] | None:
    """The stream's next message: one from the hub, ``EXPIRED`` once the token has
    expired, or None when the server shuts down. An idle stream waits here at no cost:
    no polling, one timer for its expiry."""
    loop = asyncio.get_running_loop()
    if loop.time() >= expires:
        return {"event": EXPIRED, "data": {"reason": "token_expired"}}
    getter = asyncio.ensure_future(queue.get())
    try:
        await asyncio.wait(
            {getter, farewell}, timeout=expires - loop.time(), return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        if not getter.done():
            getter.cancel()  # a cancelled get takes nothing off the queue
    if getter.done() and not getter.cancelled():
        return getter.result()
    if farewell.done():
        return None
    return {"event": EXPIRED, "data": {"reason": "token_expired"}}


def _presented_token(request: Request) -> str:
    """The user token the request was let in with, as the ``end_user`` dependency read
    it: ``?token=`` first, else the bearer header."""
    query = request.query_params.get("token")
    if query:
        return query
    _scheme, _, credential = request.headers.get("authorization", "").partition(" ")
    return credential.strip()


@router.get("/inbox/{item_id}", response_model=schemas.Item)
async def get_item(item_id: str, user: EndUser, inbox: Inbox) -> schemas.Item:
    return await inbox.item(user, item_id)


@router.patch("/inbox/{item_id}", response_model=schemas.Item)
async def mark_one(item_id: str, body: schemas.Marks, user: EndUser, inbox: Inbox) -> schemas.Item:
    """Set or clear read, seen or archived on one item."""
    return await inbox.mark_one(user, item_id, body)
