"""Metrics and logs of each hand-over: the latency from the event's acceptance of each
delivery that went out, and the errors of the services that answered."""

from __future__ import annotations

import logging

from tidings.channels.sending import Batch, Later, Outgoing, Refused, Result, Sent
from tidings.delivery.sender import Middleware
from tidings.kit import metrics
from tidings.kit.clock import Clock
from tidings.planning.rules import staleness

log = logging.getLogger("tidings.delivery.sender")


class Observed(Middleware):
    name = "observed"

    def __init__(self, clock: Clock, measured: metrics.Metrics) -> None:
        self._clock = clock
        self._measured = measured

    def handed(self, item: Outgoing, carrier: str, result: Result, batch: Batch) -> None:
        if isinstance(result, Sent):
            event = batch.events.get(item.delivery["event_id"])
            if event is not None:
                self._measured.delivered(carrier, staleness.counted_from(event), self._clock.now())
            log.info(
                "%s accepted by %s",
                carrier,
                result.by or carrier,
                extra={
                    "event_id": item.delivery["event_id"],
                    "notification_id": item.delivery.get("notification_id"),
                    "delivery_id": item.delivery["id"],
                    "message_id": result.fields.get("message_id"),
                },
            )
        elif isinstance(result, Refused | Later) and result.by is not None:
            self._measured.provider_error(result.by, permanent=isinstance(result, Refused))
