"""HTTP for the end user's inbox, under ``/v1/me``: list, count, flag, and a live stream."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import anyio
import orjson
from fastapi import APIRouter, Depends, Header, Query, Request
from sse_starlette import EventSourceResponse

from tidings.auth import tokens
from tidings.auth.dependencies import EndUser
from tidings.inbox import schemas
from tidings.inbox.service import InboxService
from tidings.inbox.stream import START, CatchUp, Position, encode_position, position_of
from tidings.kit import errors
from tidings.kit.live import CLOSED, RECOUNT, RESYNC, LiveHub

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
    counts: bool = False,
) -> schemas.Page:
    """Your items, newest first; pass ``next_cursor`` back as ``cursor`` for the next page.
    With ``counts=true`` the answer carries the inbox's counts too (the badge and the
    first page in one request); without it, ``counts`` is null."""
    return await inbox.page(
        user,
        cursor=cursor,
        limit=limit,
        unread_only=status == "unread",
        archived=archived,
        with_counts=counts,
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
async def stream(
    request: Request,
    user: EndUser,
    inbox: Inbox,
    last_event_id_header: Annotated[
        str | None,
        Header(
            alias="Last-Event-ID",
            description="The id of the last event received; a browser's EventSource "
            "sends it by itself when it reconnects",
        ),
    ] = None,
    last_event_id: Annotated[
        str | None,
        Query(description="The same, for a client that cannot set the header"),
    ] = None,
) -> EventSourceResponse:
    """Server-Sent Events: ``counts`` at once, then ``item`` and ``counts`` as they change.

    Every event carries an ``id``. Reconnecting with it (``Last-Event-ID``, or
    ``?last_event_id=``) first sends the items written or merged since, oldest first,
    then the counts; when too many were missed, or the id is unknown, ``resync`` comes
    instead (reload the first page). The stream ends with ``expired`` when the token
    stops being accepted (ask the application for a new one and open a new stream with
    it), or with ``closed`` when the same user opened more streams than a process keeps
    (the oldest closes).
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
    # The header wins: a browser resuming a stream opened with the query sends both.
    resume_from = last_event_id_header or last_event_id

    async def events() -> AsyncIterator[dict[str, Any]]:
        async with hub.subscribe(user) as queue, _broadcasts_to(inbox, user, queue):
            # Caught up after subscribing, so nothing falls between the replay and the
            # stream (what lands in both is sent once).
            place = _Place()
            for event in await _catch_up(inbox, user, resume_from, place):
                yield event
            farewell = asyncio.ensure_future(shutting_down.wait())
            try:
                while (message := await _next_message(queue, farewell, expires)) is not None:
                    kind = message["event"]
                    if kind == RESYNC:
                        # This stream fell behind its queue: the database has what it lost.
                        replay = await _catch_up(inbox, user, place.event_id, place)
                        for event in replay:
                            yield event
                        continue
                    if kind == RECOUNT:
                        if (counts := await _counts(inbox, user, place)) is not None:
                            yield counts
                        continue
                    if kind == "item" and not place.advance(message["data"]):
                        continue  # sent already, by the replay
                    data = orjson.dumps(message["data"]).decode()
                    yield {"event": kind, "data": data, "id": place.event_id}
                    if kind in (CLOSED, EXPIRED):
                        return
            finally:
                farewell.cancel()

    # On server shutdown the stream ends cleanly; EventSource reconnects by itself.
    return EventSourceResponse(
        events(), ping=PING_SECONDS, shutdown_event=shutting_down, shutdown_grace_period=1.0
    )


def _broadcasts_to(
    inbox: InboxService, user: str, queue: asyncio.Queue[dict[str, Any]]
) -> contextlib.AbstractAsyncContextManager[Any]:
    """While entered, the broadcasts of the user's topics come to the stream's queue too."""
    if inbox.broadcasts is None:
        return contextlib.nullcontext()
    return inbox.broadcasts.watch(user, queue)


class _Place:
    """Where a stream stands: the position its events' ids name, and the items its
    latest replay sent (a live message of one of them is not sent again)."""

    def __init__(self) -> None:
        self.position: Position = START
        self.replayed: set[Position] = set()

    @property
    def event_id(self) -> str:
        return encode_position(self.position)

    def caught_up(self, catch_up: CatchUp) -> None:
        self.position = catch_up.position
        self.replayed = {position_of(item) for item in catch_up.items}

    def advance(self, data: Any) -> bool:
        """Take in a live item; False when the replay sent it already.

        The position never moves back: an item committed late with an older position
        is sent, and the id stays where it was.
        """
        position = _live_position(data)
        if position is None:
            return True
        if position in self.replayed:
            return False
        self.position = max(self.position, position)
        return True


async def _catch_up(
    inbox: InboxService, user: str, last_event_id: str | None, place: _Place
) -> list[dict[str, Any]]:
    """The events that (re)start a stream: ``resync`` or the missed items, then counts.
    Bounded: at most ``REPLAY_LIMIT`` items."""
    catch_up = await inbox.catch_up(user, last_event_id)
    place.caught_up(catch_up)
    events: list[dict[str, Any]] = []
    if catch_up.resync:
        events.append({"event": RESYNC, "data": "{}", "id": place.event_id})
    for item in catch_up.items:
        events.append(
            {
                "event": "item",
                "data": item.model_dump_json(),
                "id": encode_position(position_of(item)),
            }
        )
    counts = await inbox.counts(user)
    events.append({"event": "counts", "data": counts.model_dump_json(), "id": place.event_id})
    return events


async def _counts(inbox: InboxService, user: str, place: _Place) -> dict[str, Any] | None:
    """A ``counts`` event, worked out here; None when counting failed."""
    try:
        counts = await inbox.counts(user)
    except Exception:
        # Live push is best effort: the next change, or the next connection, brings
        # the counts.
        log.warning("live counts for a stream failed", exc_info=True)
        return None
    return {"event": "counts", "data": counts.model_dump_json(), "id": place.event_id}


def _live_position(data: Any) -> Position | None:
    """The position of an item pushed live; None when it names none (not an item)."""
    try:
        at, item_id = dt.datetime.fromisoformat(data["created_at"]), data["id"]
    except (TypeError, KeyError, ValueError):
        return None
    if at.tzinfo is None or not isinstance(item_id, str):
        return None
    return (at.astimezone(dt.UTC), item_id)


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
