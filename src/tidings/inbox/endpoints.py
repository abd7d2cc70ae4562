"""HTTP for the end user's inbox, under ``/v1/me``: list, count, flag, and a live stream."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import anyio
import orjson
from fastapi import APIRouter, Depends, Query, Request
from sse_starlette import EventSourceResponse

from tidings.auth.dependencies import EndUser
from tidings.inbox import schemas
from tidings.inbox.service import InboxService
from tidings.kit.live import RECOUNT, LiveHub

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
    responses={200: {"content": {"text/event-stream": {"schema": _SSE_EVENT}}}},
)
async def stream(request: Request, user: EndUser, inbox: Inbox) -> EventSourceResponse:
    """Server-Sent Events: ``counts`` at once, then ``item`` and ``counts`` as they change."""
    hub: LiveHub = request.app.state.live
    shutting_down = anyio.Event()

    async def events() -> AsyncIterator[dict[str, Any]]:
        async with hub.subscribe(user) as queue:
            # Counted after subscribing, so nothing falls between the count and the stream.
            initial = await inbox.counts(user)
            yield {"event": "counts", "data": initial.model_dump_json()}
            while not shutting_down.is_set():
                try:
                    message = await asyncio.wait_for(queue.get(), timeout=0.5)
                except TimeoutError:
                    if await request.is_disconnected():
                        return
                    continue
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
                yield {"event": message["event"], "data": orjson.dumps(message["data"]).decode()}

    # On server shutdown the stream ends cleanly; EventSource reconnects by itself.
    return EventSourceResponse(
        events(), ping=15, shutdown_event=shutting_down, shutdown_grace_period=1.0
    )


@router.get("/inbox/{item_id}", response_model=schemas.Item)
async def get_item(item_id: str, user: EndUser, inbox: Inbox) -> schemas.Item:
    return await inbox.item(user, item_id)


@router.patch("/inbox/{item_id}", response_model=schemas.Item)
async def mark_one(item_id: str, body: schemas.Marks, user: EndUser, inbox: Inbox) -> schemas.Item:
    """Set or clear read, seen or archived on one item."""
    return await inbox.mark_one(user, item_id, body)
