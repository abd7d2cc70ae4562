"""The preview's "what would they get?": a dry run of the previewed payload for one user.

The operator's session stands for a key that may publish every type (the dry run writes
nothing and counts nothing, so no producer's key is needed); the payload is checked as a
publish checks it, and the answer is each channel's decision for that user now.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tidings.console.rendering import csrf_error, csrf_ok, runtime, signed_in
from tidings.events.schemas import EventIn
from tidings.kit import errors

router = APIRouter()


class RehearsalIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data: dict[str, Any] = Field(default_factory=dict)
    actor: dict[str, Any] | None = None
    user_id: str = Field(min_length=1, max_length=255)


@router.post("/api/dry-run/{type_key}")
async def dry_run_json(
    request: Request,
    type_key: Annotated[str, Path(max_length=200)],
    body: RehearsalIn,
    x_csrf_token: Annotated[str | None, Header()] = None,
) -> Response:
    """What ``body.user_id`` would get if the previewed payload were published now."""
    operator = await signed_in(request)
    if operator is None:
        return _error(errors.Unauthenticated("Sign in to the console first.", field="session"))
    if not csrf_ok(request, operator, x_csrf_token):
        return _error(csrf_error())
    found = runtime(request)
    try:
        event = EventIn.model_validate(
            {
                "type": type_key,
                "idempotency_key": "console-dry-run",
                "recipients": [body.user_id],
                "actor": body.actor,
                "data": body.data,
            }
        )
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        return _error(errors.Invalid(first["msg"], field=where))
    # Planned as a key that may publish every type would have it planned: writes nothing.
    key = dataclasses.replace(operator.key, scopes=("*",))
    try:
        prepared = found.events.prepare(key, event, counted=False)
    except errors.TidingsError as exc:
        return _error(exc)
    result = await found.dry_run.plan(prepared)
    [recipient] = result.recipients
    return JSONResponse(
        {
            "user_id": recipient.user_id,
            "planned_at": result.planned_at.isoformat(),
            "channels": [
                {
                    "channel": c.channel,
                    "decision": c.decision,
                    "reason": c.reason,
                    "until": None if c.until is None else c.until.isoformat(),
                }
                for c in recipient.channels
            ],
        }
    )


def _error(exc: errors.TidingsError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status)
