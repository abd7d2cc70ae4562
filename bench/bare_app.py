"""The reference for ``ingest_vs_bare.py``: a bare FastAPI endpoint that writes nothing.

``POST /v1/events`` parses the body into Tidings' own ``EventIn`` model and answers 202
with Tidings' response model. Run under uvicorn exactly as ``tidings serve`` runs: one worker,
uvloop, httptools, access log off.

    .venv/bin/python bench/bare_app.py --port 8001
"""

from __future__ import annotations

import argparse
import uuid

from fastapi import FastAPI

# The very models Tidings parses with, so the two endpoints do the same parsing work.
from tidings.events.schemas import Accepted, EventIn

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
