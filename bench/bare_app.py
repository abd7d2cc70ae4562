"""The reference for ``ingest_vs_bare.py``: a bare FastAPI endpoint that writes nothing.

``POST /v1/events`` parses the body into a pydantic model equivalent to Tidings'
``EventIn`` (same fields, same constraints) and answers 202 with the same response
model as Tidings. Run under uvicorn exactly as ``tidings serve`` runs: one worker,
uvloop, httptools, access log off.

    .venv/bin/python bench/bare_app.py --port 8001
"""

from __future__ import annotations

import argparse
import uuid
import zoneinfo
from typing import Annotated, Any

from fastapi import FastAPI
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)

UserId = Annotated[str, StringConstraints(min_length=1, max_length=255)]
Tenant = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9:._\-]{0,199}$")]
TopicKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9:._\-]{0,254}$")]
Email = Annotated[
    str,
    StringConstraints(
        max_length=320, pattern=r"^[^@\s\x00-\x1f]+@[^@\s\x00-\x1f]+\.[^@\s\x00-\x1f]+$"
    ),
]
Locale = Annotated[str, StringConstraints(pattern=r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")]


class Actor(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: UserId
    name: Annotated[str, StringConstraints(max_length=200)] | None = None
    avatar_url: Annotated[str, StringConstraints(max_length=2000)] | None = None


class RecipientIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: UserId
    email: Email | None = None
    name: Annotated[str, StringConstraints(max_length=200)] | None = None
    locale: Locale | None = None
    timezone: str | None = None

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA timezone") from None
        return value


def _id_to_recipient(value: Any) -> Any:
    return {"id": value} if isinstance(value, str) else value


class EventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    idempotency_key: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    tenant: Tenant = "default"
    actor: Actor | None = None
    recipients: (
        Annotated[
            list[Annotated[RecipientIn, BeforeValidator(_id_to_recipient)]],
            Field(min_length=1, max_length=1000),
        ]
        | None
    ) = None
    topic: TopicKey | None = None
    data: dict[str, Any] = Field(default_factory=dict)


class Accepted(BaseModel):
    event_id: str
    replayed: bool


app = FastAPI(title="bare")


@app.post("/v1/events", status_code=202, response_model=Accepted)
async def publish(body: EventIn) -> Accepted:
    """Parse and validate the event, store nothing."""
    return Accepted(event_id=str(uuid.uuid4()), replayed=False)


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
