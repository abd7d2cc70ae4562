"""HTTP for operators: delivery timelines and dead letters."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from tidings.auth.dependencies import Operator, Producer
from tidings.kit import clock, errors
from tidings.operations import schemas
from tidings.operations.dead_letters import DeadLetters
from tidings.operations.timeline import DeliveryFilter, Timelines

router = APIRouter(prefix="/v1", tags=["operations"])

DeadLetterId = Annotated[str, Path(min_length=1, max_length=200)]


async def timelines(request: Request) -> Timelines:
    found: Timelines = request.app.state.timelines
    return found


async def dead_letters(request: Request) -> DeadLetters:
    found: DeadLetters = request.app.state.dead_letters
    return found


Timeline = Annotated[Timelines, Depends(timelines)]
Dead = Annotated[DeadLetters, Depends(dead_letters)]


@router.get("/deliveries/{delivery_id}", response_model=schemas.DeliveryTimeline)
async def get_delivery(
    delivery_id: Annotated[str, Path(min_length=1, max_length=64)],
    key: Producer,
    service: Timeline,
) -> schemas.DeliveryTimeline:
    """One delivery with every transition: when, by which stage and attempt, and why."""
    return schemas.DeliveryTimeline.model_validate(await service.delivery(delivery_id, key))


@router.get("/users/{user_id}/deliveries", response_model=schemas.DeliveryPage)
async def user_deliveries(
    user_id: Annotated[str, Path(min_length=1, max_length=255)],
    _key: Operator,
    service: Timeline,
    channel: Annotated[str | None, Query(max_length=32)] = None,
    state: Annotated[str | None, Query(max_length=32)] = None,
    type: Annotated[str | None, Query(max_length=200)] = None,
    since: Annotated[dt.datetime | None, Query(description="created at or after")] = None,
    until: Annotated[dt.datetime | None, Query(description="created before")] = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> schemas.DeliveryPage:
    """A user's deliveries, newest first, with their timelines (operators only)."""
    where = DeliveryFilter(
        channel=channel,
        state=state,
        type=type,
        since=_aware(since, "since"),
        until=_aware(until, "until"),
    )
    if where.since and where.until and where.since >= where.until:
        raise errors.Invalid("'since' must come before 'until'.", field="since")
    page, next_cursor = await service.for_user(user_id, where, cursor, limit)
    return schemas.DeliveryPage(
        items=[schemas.DeliveryTimeline.model_validate(row) for row in page],
        next_cursor=next_cursor,
    )


@router.get("/dead-letters", response_model=schemas.DeadLetterPage)
async def list_dead_letters(
    _key: Operator,
    service: Dead,
    kind: Annotated[str | None, Query(max_length=64)] = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> schemas.DeadLetterPage:
    """Jobs given up on after their retries, in id order, optionally of one kind."""
    rows, next_cursor = await service.page(kind, cursor, limit)
    return schemas.DeadLetterPage(items=[_dead(row) for row in rows], next_cursor=next_cursor)


@router.post("/dead-letters/replay", response_model=schemas.Replayed)
async def replay_kind(body: schemas.ReplayKind, _key: Operator, service: Dead) -> schemas.Replayed:
    """Enqueue every dead letter of a kind again; work already done is not done twice."""
    return schemas.Replayed(replayed=await service.replay_kind(body.kind))


@router.post("/dead-letters/{dead_letter_id:path}/replay", response_model=schemas.Replayed)
async def replay_one(
    dead_letter_id: DeadLetterId, _key: Operator, service: Dead
) -> schemas.Replayed:
    """Enqueue one dead letter's job again, with fresh attempts; a second replay of the
    same id is a 404, since the dead letter is gone."""
    row = await service.replay(dead_letter_id)
    return schemas.Replayed(replayed=1, ids=[row["id"]])


@router.get("/dead-letters/{dead_letter_id:path}", response_model=schemas.DeadLetter)
async def get_dead_letter(
    dead_letter_id: DeadLetterId, _key: Operator, service: Dead
) -> schemas.DeadLetter:
    """One dead letter: its job's payload, attempts and last error."""
    return _dead(await service.get(dead_letter_id))


@router.delete("/dead-letters/{dead_letter_id:path}", status_code=204)
async def discard_dead_letter(
    dead_letter_id: DeadLetterId, _key: Operator, service: Dead
) -> Response:
    """Forget a dead letter without running its job."""
    await service.discard(dead_letter_id)
    return Response(status_code=204)


def _dead(row: dict[str, Any]) -> schemas.DeadLetter:
    return schemas.DeadLetter.model_validate(row)


def _aware(at: dt.datetime | None, field: str) -> dt.datetime | None:
    """The time in UTC; one without a zone is taken as UTC.

    Raises:
        errors.Invalid: in UTC it falls outside years 1 to 9999 (``0001-01-01T00:00+14:00``).
    """
    return None if at is None else clock.in_utc(at, field)
