"""The health routes every process answers: ``/healthz``, ``/readyz`` and ``/metrics``."""

from __future__ import annotations

import logging

from fastapi import FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from tidings import __version__
from tidings.app.runtime import Runtime
from tidings.kit import loops, metrics

log = logging.getLogger("tidings.app")


async def observe_queues(runtime: Runtime) -> None:
    """Read the queue gauges now: the ``jobs`` table, and JetStream's streams if used.
    An engine that does not answer leaves its gauges as they were; the scrape goes on."""
    try:
        await runtime.metrics.observe_queue(runtime.db, runtime.clock.now())
        if streams := await runtime.queue.pending():
            runtime.metrics.observe_streams(streams)
    except Exception:
        log.warning("reading queue depths for /metrics failed", exc_info=True)


def add_health_routes(app: FastAPI, runtime: Runtime) -> None:
    """``/healthz`` (the process answers), ``/readyz`` (its engines answer too) and
    ``/metrics`` (Prometheus)."""

    @app.get("/metrics", tags=["operations"], response_class=PlainTextResponse)
    async def metrics_page() -> Response:
        """The process's metrics in Prometheus' text format; queue depths are read now."""
        await observe_queues(runtime)
        return Response(runtime.metrics.render(), media_type=metrics.CONTENT_TYPE)

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers; ``loop`` names its event loop (``uvloop``, or
        ``asyncio`` where uvloop is not installed)."""
        return {"status": "ok", "version": __version__, "loop": loops.name()}

    @app.get("/readyz", tags=["operations"], response_model=None)
    async def readyz() -> JSONResponse:
        """Readiness: 200 when every engine this process uses answers, else 503 naming
        the one that does not."""
        checks = await runtime.readiness()
        ready = all(state == "ok" for state in checks.values())
        return JSONResponse(
            {"status": "ready" if ready else "unavailable", "checks": checks},
            status_code=200 if ready else 503,
        )
