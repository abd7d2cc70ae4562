"""Traces: one trace from the HTTP request through every pipeline stage to the provider.

Tracing is off unless the standard ``OTEL_*`` variables turn it on
(``OTEL_TRACES_EXPORTER=otlp`` or ``console``); then ``configure`` installs an SDK
tracer provider with that exporter. The trace context crosses the queue in each job's
headers (W3C ``traceparent``/``tracestate``), which the database queue keeps in
``jobs.headers`` and JetStream carries as message headers, so a worker continues the
trace of the request whose commit wrote the job.

Spans go to the provider given to ``use`` (tests install one with an in-memory
exporter), otherwise to OpenTelemetry's global provider, a no-op unless configured.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, Tracer, TracerProvider

from tidings import __version__

LINKS_HEADER = "tidings-links"
"""A job header listing, comma-separated, the ``traceparent`` of other requests the job
also serves (events committed together into one planning job); they become span links."""
MAX_LINKS = 32

_provider: TracerProvider | None = None
_global_seen = False
_global_checked_at = -math.inf
_GLOBAL_RECHECK_SECONDS = 1.0
_configured = False
_lock = threading.Lock()


def use(provider: TracerProvider | None) -> None:
    """Send Tidings' spans to ``provider``; None goes back to the global provider."""
    global _provider
    _provider = provider


def tracer() -> Tracer:
    """The tracer Tidings' spans are made with."""
    provider = _provider if _provider is not None else trace.get_tracer_provider()
    return provider.get_tracer("tidings", __version__)


def recording() -> bool:
    """Whether spans go anywhere: a provider was given to ``use`` or installed globally.

    Asked on every request. OpenTelemetry's global provider is set at most once per
    process, so once one is seen the answer stays; until then it is looked up again at
    most once a second (each look-up reads the environment)."""
    global _global_seen, _global_checked_at
    if _provider is not None or _global_seen:
        return True
    now = time.monotonic()
    if now - _global_checked_at < _GLOBAL_RECHECK_SECONDS:
        return False
    _global_checked_at = now
    _global_seen = not isinstance(
        trace.get_tracer_provider(), (trace.ProxyTracerProvider, trace.NoOpTracerProvider)
    )
    return _global_seen


def enabled(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the ``OTEL_*`` variables ask for traces: an exporter other than ``none``
    is named and the SDK is not disabled. Off by default."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return bool(_exporter_names(env))


def configure(environ: Mapping[str, str] | None = None) -> TracerProvider | None:
    """Install an SDK tracer provider as the ``OTEL_*`` variables describe, once per
    process; returns it, or None when tracing is off.

    ``OTEL_SERVICE_NAME`` (default ``tidings``), ``OTEL_RESOURCE_ATTRIBUTES``,
    ``OTEL_TRACES_SAMPLER`` and ``OTEL_EXPORTER_OTLP_*`` are read by the SDK itself.

    Raises:
        ValueError: ``OTEL_TRACES_EXPORTER`` names an exporter Tidings does not ship.
    """
    global _configured, _global_seen
    env = os.environ if environ is None else environ
    if not enabled(env):
        return None
    with _lock:
        if _configured:
            provider = trace.get_tracer_provider()
            return provider
        provider = _sdk_provider(env)
        trace.set_tracer_provider(provider)
        _configured = _global_seen = True
        return provider


def _exporter_names(env: Mapping[str, str]) -> list[str]:
    names = [n.strip().lower() for n in env.get("OTEL_TRACES_EXPORTER", "").split(",")]
    return [n for n in names if n and n != "none"]


def _sdk_provider(env: Mapping[str, str]) -> TracerProvider:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SpanExporter,
    )

    attributes: dict[str, str] = {}
    if "OTEL_SERVICE_NAME" not in env and "service.name=" not in env.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    ):
        attributes["service.name"] = "tidings"
    attributes["service.version"] = __version__
    provider = SdkTracerProvider(resource=Resource.create(attributes))
    for name in _exporter_names(env):
        exporter: SpanExporter
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter()
        elif name == "console":
            exporter = ConsoleSpanExporter()
        else:
            raise ValueError(
                f"OTEL_TRACES_EXPORTER={name!r} is not supported: use otlp, console or none"
            )
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def current_headers() -> dict[str, str] | None:
    """The current trace context as W3C headers, or None outside any span."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier or None


def merged_headers(carriers: Sequence[Mapping[str, str] | None]) -> dict[str, str] | None:
    """Headers for one job that serves several traces: the first one's context, with the
    others (at most ``MAX_LINKS``) listed to be linked."""
    present = [dict(c) for c in carriers if c]
    if not present:
        return None
    first = present[0]
    others = [
        c["traceparent"]
        for c in present[1:]
        if c.get("traceparent") and c["traceparent"] != first.get("traceparent")
    ]
    unique = list(dict.fromkeys(others))[:MAX_LINKS]
    if unique:
        first[LINKS_HEADER] = ",".join(unique)
    return first


def _span_context(headers: Mapping[str, str]) -> SpanContext | None:
    found = trace.get_current_span(propagate.extract(dict(headers))).get_span_context()
    return found if found.is_valid else None


@contextlib.contextmanager
def job_span(
    name: str,
    headers: Sequence[Mapping[str, str] | None],
    attributes: Mapping[str, Any] | None = None,
) -> Iterator[Span]:
    """A span around one handler call for jobs carrying ``headers``: the child of the
    first job's context, linked to every other context among them."""
    parent: otel_context.Context = otel_context.Context()
    parent_span: SpanContext | None = None
    links: list[Link] = []
    seen: set[tuple[int, int]] = set()
    for carrier in headers:
        if not carrier:
            continue
        candidates = [_span_context(carrier)]
        for traceparent in carrier.get(LINKS_HEADER, "").split(","):
            if traceparent:
                candidates.append(_span_context({"traceparent": traceparent}))
        for found in candidates:
            if found is None or (found.trace_id, found.span_id) in seen:
                continue
            seen.add((found.trace_id, found.span_id))
            if parent_span is None:
                parent_span = found
                parent = propagate.extract(dict(carrier))
            elif len(links) < MAX_LINKS:
                links.append(Link(found))
    with tracer().start_as_current_span(
        name,
        context=parent,
        kind=SpanKind.CONSUMER,
        links=links,
        attributes=dict(attributes or {}),
    ) as span:
        yield span


@contextlib.contextmanager
def span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, Any] | None = None,
) -> Iterator[Span]:
    """A span in the current trace, current while the block runs."""
    with tracer().start_as_current_span(
        name, kind=kind, attributes=dict(attributes or {})
    ) as current:
        yield current


def ids() -> dict[str, str]:
    """The current trace and span ids as hex (for log lines), or nothing outside a span."""
    found = trace.get_current_span().get_span_context()
    if not found.is_valid:
        return {}
    return {"trace_id": format(found.trace_id, "032x"), "span_id": format(found.span_id, "016x")}


_UNTRACED = frozenset({"/metrics", "/healthz", "/readyz"})


class RequestSpans:
    """ASGI middleware: a server span per HTTP request, continuing the caller's trace
    when it sent a ``traceparent``; named by the route template, never the raw path."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("path") in _UNTRACED or not recording():
            await self.app(scope, receive, send)
            return
        incoming = {
            key.decode("latin-1").lower(): value.decode("latin-1")
            for key, value in scope.get("headers", ())
        }
        method = scope.get("method", "GET")
        status: list[int] = []

        async def send_with_status(message: Any) -> None:
            if message["type"] == "http.response.start":
                status.append(int(message["status"]))
            await send(message)

        with tracer().start_as_current_span(
            method,
            context=propagate.extract(incoming),
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method},
        ) as current:
            try:
                await self.app(scope, receive, send_with_status)
            finally:
                route = getattr(scope.get("route"), "path", None)
                if route:
                    current.update_name(f"{method} {route}")
                    current.set_attribute("http.route", route)
                if status:
                    current.set_attribute("http.response.status_code", status[0])
                    if status[0] >= 500:
                        current.set_status(trace.StatusCode.ERROR)
