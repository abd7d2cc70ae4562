"""The console's dead letters: list, inspect, replay (one, or all of a kind), discard."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import RedirectResponse

from tidings.console.rendering import (
    csrf_error,
    csrf_ok,
    failed,
    form,
    page,
    runtime,
    signed_in,
    text,
    to_login,
)
from tidings.kit import errors

router = APIRouter()

PAGE_SIZE = 50
NOTICES = {
    "replayed": "The dead letter's job was enqueued again.",
    "discarded": "The dead letter was discarded.",
    "replayed-kind": "Every dead letter of that kind was enqueued again.",
}


@router.get("/dead-letters")
async def dead_letters_page(
    request: Request,
    kind: Annotated[str | None, Query(max_length=64)] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    done: Annotated[str | None, Query(max_length=32)] = None,
) -> Response:
    """Jobs given up on after their retries, with replay and discard."""
    operator = await signed_in(request)
    if operator is None:
        return to_login(request)
    service = runtime(request).dead_letters
    rows, more = await service.page(text(kind), text(cursor), PAGE_SIZE)
    return page(
        request,
        "dead_letters.html",
        operator,
        rows=rows,
        more=more,
        kind=text(kind) or "",
        kinds=await service.count(),
        notice=NOTICES.get(done or ""),
    )


@router.get("/dead-letters/{dead_letter_id:path}")
async def dead_letter_page(
    request: Request, dead_letter_id: Annotated[str, Path(max_length=200)]
) -> Response:
    """One dead letter: its job's payload, attempts and last error."""
    operator = await signed_in(request)
    if operator is None:
        return to_login(request)
    try:
        row = await runtime(request).dead_letters.get(dead_letter_id)
    except errors.TidingsError as exc:
        return failed(request, operator, exc)
    return page(request, "dead_letter.html", operator, row=row)


@router.post("/dead-letters/{dead_letter_id:path}/replay")
async def replay(
    request: Request, dead_letter_id: Annotated[str, Path(max_length=200)]
) -> Response:
    """Enqueue a dead letter's job again."""
    return await _act(request, "replayed", dead_letter_id)


@router.post("/dead-letters/{dead_letter_id:path}/discard")
async def discard(
    request: Request, dead_letter_id: Annotated[str, Path(max_length=200)]
) -> Response:
    """Forget a dead letter without running its job."""
    return await _act(request, "discarded", dead_letter_id)


@router.post("/dead-letters-replay")
async def replay_kind(request: Request) -> Response:
    """Enqueue every dead letter of one kind again."""
    return await _act(request, "replayed-kind", None)


async def _act(request: Request, action: str, dead_letter_id: str | None) -> Response:
    operator = await signed_in(request)
    if operator is None:
        return to_login(request)
    fields = await form(request)
    if not csrf_ok(request, operator, fields.get("csrf")):
        return failed(request, operator, csrf_error())
    service = runtime(request).dead_letters
    try:
        if action == "replayed" and dead_letter_id is not None:
            await service.replay(dead_letter_id)
        elif action == "discarded" and dead_letter_id is not None:
            await service.discard(dead_letter_id)
        else:
            kind = text(fields.get("kind"))
            if kind is None:
                raise errors.Invalid("Say which kind of dead letters to replay.", field="kind")
            await service.replay_kind(kind)
    except errors.TidingsError as exc:
        return failed(request, operator, exc)
    return RedirectResponse(f"/console/dead-letters?done={action}", 303)
