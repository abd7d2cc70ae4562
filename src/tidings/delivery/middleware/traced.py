"""A span around each hand-over, a client span named after the channel's service, that
errs when the delivery did not go out."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from opentelemetry.trace import SpanKind, StatusCode

from tidings.channels.sending import Outgoing, Result, Sent
from tidings.delivery.sender import Middleware
from tidings.kit import tracing


class Traced(Middleware):
    name = "traced"

    async def around(
        self, item: Outgoing, carrier: str, call: Callable[[], Awaitable[Result]]
    ) -> Result:
        with tracing.span(
            "provider send",
            kind=SpanKind.CLIENT,
            attributes={"tidings.channel": carrier, "tidings.delivery_id": item.delivery["id"]},
        ) as span:
            result = await call()
            by = getattr(result, "by", None)
            if by is not None:
                span.set_attribute("tidings.provider", by)
            if isinstance(result, Sent) and result.fields.get("message_id"):
                span.set_attribute("tidings.message_id", result.fields["message_id"])
            if not isinstance(result, Sent):
                span.set_status(StatusCode.ERROR, type(result).__name__)
            return result
