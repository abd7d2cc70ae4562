"""The HTTP application: the runtime's services on its state, the middleware, every
package's router and the health routes, started and closed with the server."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from tidings import __version__
from tidings.app.health import add_health_routes
from tidings.app.runtime import Runtime
from tidings.app.wiring import build_runtime
from tidings.backends import build_rate_limits
from tidings.catalog import endpoints as catalog_endpoints
from tidings.channels import runtime as channel_runtime
from tidings.console import endpoints as console_endpoints
from tidings.delivery import feedback_endpoints
from tidings.email import endpoints as email_endpoints
from tidings.events import endpoints as events_endpoints
from tidings.inbox import endpoints as inbox_endpoints
from tidings.kit import http, outage, tracing
from tidings.kit.settings import Settings
from tidings.operations import endpoints as operations_endpoints
from tidings.preferences import endpoints as preferences_endpoints
from tidings.users import endpoints as users_endpoints
from tidings.web import cors as web_cors
from tidings.web import pages as web_pages
from tidings.webhooks import endpoints as webhooks_endpoints


def create_app(settings: Settings | None = None, *, runtime: Runtime | None = None) -> FastAPI:
    """The HTTP application; starts the worker too unless ``worker_enabled`` is off."""
    runtime = runtime or build_runtime(settings or Settings())
    settings = runtime.settings
    rate_limits = build_rate_limits(settings)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        runtime.group_commit.start()
        await runtime.start(consume=settings.worker_enabled)
        try:
            yield
        finally:
            await runtime.worker.stop()
            await runtime.group_commit.stop()
            await runtime.close()
            await rate_limits.close()

    # /docs loads Swagger UI from Tidings itself, not from a CDN: the reference works
    # offline and behind a strict network policy. No ReDoc: its script fetches a logo
    # from its maker's CDN whatever it is given.
    # FastAPI's own OpenTelemetry instrumentation stays off: ``tracing.RequestSpans`` makes
    # the one server span per request, and Prometheus the request metrics. Left on, it
    # would add a second span per request and look the providers up on every request.
    app = FastAPIOffline(
        telemetry={"tracing": False, "metrics": False, "logs": False},
        redoc_url=None,
        title="Tidings",
        version=__version__,
        summary="Events in; in-app inbox and email out.",
        lifespan=lifespan,
        static_url="/docs/assets",
        swagger_ui_parameters={"persistAuthorization": True},
    )
    for name in (
        "settings",
        "auth",
        "users",
        "events",
        "inbox",
        "delivery",
        "live",
        "group_commit",
        "preferences",
        "composer",
        "mail_catcher",
        "feedback",
        "feedback_config",
        "timelines",
        "cancellations",
        "dry_run",
        "dead_letters",
        "webhooks",
    ):
        setattr(app.state, name, getattr(runtime, name))
    app.state.runtime = runtime
    app.state.rate_limits = rate_limits
    http.install_error_handlers(app, outage.of(runtime.db))
    http.document_errors(app)
    app.add_middleware(http.StrictJson)
    app.add_middleware(http.RefuseNul)
    app.add_middleware(http.BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(tracing.RequestSpans)
    app.include_router(events_endpoints.router)
    app.include_router(users_endpoints.router)
    app.include_router(preferences_endpoints.router)
    app.include_router(inbox_endpoints.router)
    app.include_router(email_endpoints.router)
    app.include_router(feedback_endpoints.router)
    app.include_router(operations_endpoints.router)
    app.include_router(catalog_endpoints.router)
    app.include_router(webhooks_endpoints.router)
    app.include_router(console_endpoints.router)
    for router in channel_runtime.routers(runtime.channels):
        app.include_router(router)
    app.include_router(web_pages.widget_router)
    if settings.demo_enabled:
        app.include_router(web_pages.demo_router)
    if settings.cors_origins:
        app.add_middleware(web_cors.EndUserCors, origins=settings.cors_origins)

    add_health_routes(app, runtime)

    return app
