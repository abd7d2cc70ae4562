"""HTTP for publishing events and asking what became of them."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Annotated, Any, Protocol, TypeVar

import orjson
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError

from tidings.auth.dependencies import Producer, producer_key
from tidings.auth.keys import ApiKey
from tidings.events import group_commit, schemas
from tidings.events.group_commit import GroupCommitter
from tidings.events.service import EventsService, Outcome, Prepared
from tidings.kit import errors, http

router = APIRouter(prefix="/v1", tags=["events"])

PREPARE_AT_ONCE = 50
"""A batch's events checked between two turns of the event loop."""

_Model = TypeVar("_Model", bound=BaseModel)
Direct = Callable[[Request], Awaitable[Response | None]]


def answered_first_by(direct: Direct) -> type[APIRoute]:
    """A route class whose requests ``direct`` answers when it can, and FastAPI's own
    handler when it cannot (``direct`` returns None): the same operation, documented from
    the endpoint's signature as usual, without FastAPI's per-request work (dependency
    solving, parsing the body into Python objects and then into the model, serialising
    the answer through its model) on the path every well-formed request takes."""

    class AnsweredFirst(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            standard = super().get_route_handler()

            async def handler(request: Request) -> Response:
                answer = await direct(request)
                return answer if answer is not None else await standard(request)

            return handler

    return AnsweredFirst


async def checked_body(request: Request, model: type[_Model]) -> _Model | None:
    """``model`` parsed straight from a JSON body that ``StrictJson`` checked; None for any
    other request (no body, not JSON, a body the model refuses), which FastAPI's handler
    then answers with its usual errors, in its usual order."""
    if not request.scope.get(http.CHECKED_JSON):
        return None
    content_type = request.headers.get("content-type", "")
    if content_type.partition(";")[0].strip().lower() != "application/json":
        return None
    body = await request.body()
    if not body:
        return None
    try:
        return model.model_validate_json(body, context=schemas.CHECKED_JSON)
    except ValidationError:
        return None


def accepted(content: Any, headers: Mapping[str, str]) -> Response:
    """A 202 with ``content`` as JSON, as FastAPI would send the response model."""
    return Response(
        orjson.dumps(content), status_code=202, media_type="application/json", headers=headers
    )


async def events_service(request: Request) -> EventsService:
    service: EventsService = request.app.state.events
    return service


async def group_committer(request: Request) -> GroupCommitter:
    committer: GroupCommitter = request.app.state.group_commit
    return committer


class EventDeliveries(Protocol):
    """What an event's view needs of the deliveries (the delivery service, wired by the
    composition root): a page of the event's deliveries and the next page's cursor."""

    async def for_event(
        self, event_id: str, cursor: str | None, limit: int
    ) -> tuple[list[Mapping[str, Any]], str | None]: ...


async def delivery_service(request: Request) -> EventDeliveries:
    service: EventDeliveries = request.app.state.delivery
    return service


class BroadcastExplainer(Protocol):
    """What an event's broadcast view needs of the inbox (its broadcasts, wired by the
    composition root): whether a subscriber has the event's broadcast, and why."""

    async def explain(self, event_id: str, user_id: str) -> dict[str, Any] | None: ...


async def broadcast_explainer(request: Request) -> BroadcastExplainer | None:
    inbox = request.app.state.inbox
    found: BroadcastExplainer | None = inbox.broadcasts
    return found


Events = Annotated[EventsService, Depends(events_service)]


async def _publish_directly(request: Request) -> Response | None:
    """``publish`` for a well-formed JSON event: the same checks, in the same order."""
    event = await checked_body(request, schemas.EventIn)
    if event is None:
        return None
    key = await producer_key(request)
    events: EventsService = request.app.state.events
    committer: GroupCommitter = request.app.state.group_commit
    outcome = await committer.submit(events.prepare(key, event))
    if outcome.conflict is not None:
        raise outcome.conflict
    return accepted(
        {"event_id": outcome.event_id, "replayed": outcome.replayed},
        events.deprecation_headers([event.type]),
    )


async def publish(
    body: schemas.EventIn,
    key: Producer,
    events: Events,
    committer: Annotated[GroupCommitter, Depends(group_committer)],
    response: Response,
) -> schemas.Accepted:
    """Publish one event. The same idempotency key with the same body replays the original
    event id; with a different body it is a 409. A deprecated type is still published,
    and the answer says so in its ``Deprecation`` and ``Warning`` headers."""
    outcome = await committer.submit(events.prepare(key, body))
    if outcome.conflict is not None:
        raise outcome.conflict
    response.headers.update(events.deprecation_headers([body.type]))
    return schemas.Accepted(event_id=outcome.event_id, replayed=outcome.replayed)


router.add_api_route(
    "/events",
    publish,
    methods=["POST"],
    status_code=202,
    response_model=schemas.Accepted,
    route_class_override=answered_first_by(_publish_directly),
)


async def _publish_batch_directly(request: Request) -> Response | None:
    """``publish_batch`` for a well-formed JSON batch: the same checks, in the same order."""
    body = await checked_body(request, schemas.BatchIn)
    if body is None:
        return None
    key = await producer_key(request)
    events: EventsService = request.app.state.events
    outcomes = await _write_batch(request, body, key, events)
    return accepted(
        {"events": [{"event_id": o.event_id, "replayed": o.replayed} for o in outcomes]},
        events.deprecation_headers(event.type for event in body.events),
    )


async def publish_batch(
    request: Request, body: schemas.BatchIn, key: Producer, events: Events, response: Response
) -> schemas.BatchAccepted:
    """Publish up to 1,000 events at once: all are accepted, or none is."""
    outcomes = await _write_batch(request, body, key, events)
    response.headers.update(events.deprecation_headers(event.type for event in body.events))
    return schemas.BatchAccepted(
        events=[schemas.Accepted(event_id=o.event_id, replayed=o.replayed) for o in outcomes]
    )


router.add_api_route(
    "/events/batch",
    publish_batch,
    methods=["POST"],
    status_code=202,
    response_model=schemas.BatchAccepted,
    route_class_override=answered_first_by(_publish_batch_directly),
)


async def _write_batch(
    request: Request, body: schemas.BatchIn, key: ApiKey, events: EventsService
) -> list[Outcome]:
    limit: int = request.app.state.settings.max_batch_events
    if len(body.events) > limit:
        raise errors.Invalid(
            f"A batch holds at most {limit} events; this one has {len(body.events)}.",
            field="events",
        )
    prepared: list[Prepared] = []
    for i, event in enumerate(body.events):
        if i and not i % PREPARE_AT_ONCE:
            # Let the rest of the process in between (a critical event's request, its
            # planning): a batch's checks would otherwise hold the event loop for
            # milliseconds at a stretch.
            await asyncio.sleep(0)
        prepared.append(events.prepare(key, event, f"events.{i}."))
    try:
        return await events.publish(prepared)
    except Exception as exc:
        raise (group_commit.refusal(exc) or exc) from exc


@router.get("/events/{event_id}", response_model=schemas.EventView)
async def get_event(
    event_id: str,
    key: Producer,
    events: Events,
    delivery: Annotated[EventDeliveries, Depends(delivery_service)],
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> schemas.EventView:
    """The event and each recipient's delivery state, with every transition."""
    row = await events.get(event_id)
    if not key.may_read(row["type"]):
        raise errors.Forbidden(
            f"This key may not read events of type {row['type']!r}.", field="authorization"
        )
    page, next_cursor = await delivery.for_event(event_id, cursor, limit)
    return schemas.EventView(
        id=row["id"],
        type=row["type"],
        tenant=row["tenant"],
        idempotency_key=row["idempotency_key"],
        actor=row["actor"],
        recipients=row["recipients"],
        topic=row["topic"],
        data=row["data"],
        created_at=row["created_at"],
        send_at=row["send_at"],
        planned_at=row["planned_at"],
        cancellation_key=row["cancellation_key"],
        cancelled_at=row["cancelled_at"],
        status=_status(row, events.now()),
        deliveries=[schemas.DeliveryView.model_validate(d) for d in page],
        next_cursor=next_cursor,
    )


class Rehearsal(Protocol):
    """Plans a prepared event without writing anything (``delivery.dry_run``)."""

    async def plan(self, prepared: Prepared) -> Any: ...


async def rehearsal(request: Request) -> Rehearsal:
    found: Rehearsal = request.app.state.dry_run
    return found


@router.post("/events/dry-run", response_model=schemas.DryRun)
async def dry_run(
    body: schemas.EventIn,
    key: Producer,
    events: Events,
    rehearsed: Annotated[Rehearsal, Depends(rehearsal)],
) -> schemas.DryRun:
    """What publishing this event would do now, for each recipient and channel: deliver,
    hold until when, go into a digest, or be suppressed and why. Checked as a publish is
    (the same 4xx); nothing is written and no rule's counter changes (a dedup key or a
    throttle stays as it was). A topic's first 1,000 subscribers are planned."""
    prepared = events.prepare(key, body, counted=False)
    return schemas.DryRun.model_validate(await rehearsed.plan(prepared))


class Canceller(Protocol):
    """Stops what an event has not sent yet (``delivery.cancellation``)."""

    async def cancel_event(self, key: ApiKey, event_id: str) -> Sequence[Any]: ...

    async def cancel_key(
        self, key: ApiKey, cancellation_key: str
    ) -> tuple[Sequence[Any], bool]: ...


async def canceller(request: Request) -> Canceller:
    found: Canceller = request.app.state.cancellations
    return found


Cancellations = Annotated[Canceller, Depends(canceller)]


@router.post("/events/cancel", response_model=schemas.Cancelled)
async def cancel_by_key(
    body: schemas.CancelIn, key: Producer, cancellations: Cancellations
) -> schemas.Cancelled:
    """Cancel every event this API key published with ``cancellation_key``: each
    delivery not sent yet is suppressed with reason ``cancelled``, and what was not
    planned yet is planned for no one. What was delivered stays. Idempotent; an unknown
    key cancels nothing (``events`` is empty)."""
    done, more = await cancellations.cancel_key(key, body.cancellation_key)
    return schemas.Cancelled(
        events=[schemas.CancelledEvent.model_validate(d) for d in done], more=more
    )


@router.post("/events/{event_id}/cancel", response_model=schemas.Cancelled)
async def cancel_event(
    event_id: str, key: Producer, cancellations: Cancellations
) -> schemas.Cancelled:
    """Cancel one event, as ``POST /v1/events/cancel`` does (the key must be allowed to
    publish its type). Idempotent: a second call stops nothing more."""
    done = await cancellations.cancel_event(key, event_id)
    return schemas.Cancelled(events=[schemas.CancelledEvent.model_validate(d) for d in done])


def _status(row: Mapping[str, Any], now: dt.datetime) -> str:
    if row["cancelled_at"] is not None:
        return "cancelled"
    if row["planned_at"] is not None:
        return "planned"
    if row["send_at"] is not None and row["send_at"] > now:
        return "scheduled"
    return "accepted"


@router.get("/events/{event_id}/broadcast/{user_id}", response_model=schemas.BroadcastReach)
async def get_broadcast_reach(
    event_id: str,
    user_id: Annotated[str, Path(min_length=1, max_length=255)],
    key: Producer,
    events: Events,
    broadcasts: Annotated[BroadcastExplainer | None, Depends(broadcast_explainer)],
) -> schemas.BroadcastReach:
    """Whether a subscriber has a broadcast event's in-app item, and why not: an event to a
    large topic is stored once and shown at read, so it has no in-app delivery per
    subscriber in its deliveries."""
    row = await events.get(event_id)
    if not key.may_read(row["type"]):
        raise errors.Forbidden(
            f"This key may not read events of type {row['type']!r}.", field="authorization"
        )
    found = None if broadcasts is None else await broadcasts.explain(event_id, user_id)
    if found is None:
        raise errors.NotFound(
            f"The event {event_id!r} was not broadcast: its in-app items are per recipient, "
            "among its deliveries (GET /v1/events/{event_id}).",
            field="event_id",
        )
    return schemas.BroadcastReach(event_id=event_id, user_id=user_id, **found)
