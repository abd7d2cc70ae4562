"""Too old to be worth sending ("your meeting starts in 5 minutes", an hour late): a
delivery whose event is older than its type's ``max_age`` is suppressed as ``stale``."""

from __future__ import annotations

from tidings import catalog
from tidings.channels.sending import Batch, Outgoing
from tidings.delivery.sender import Middleware
from tidings.kit.clock import Clock
from tidings.planning import planner
from tidings.planning.rules import staleness


class Staleness(Middleware):
    name = "staleness"

    def __init__(self, types: catalog.Catalog, clock: Clock) -> None:
        self._catalog = types
        self._clock = clock

    def screen(self, item: Outgoing, batch: Batch) -> str | None:
        event = item.event
        if event is None:
            return None
        ntype = self._catalog.get(event["type"])
        if ntype is not None and staleness.is_stale(
            staleness.counted_from(event), batch.read_at, ntype.rules.max_age
        ):
            return planner.SuppressionReason.STALE.value
        return None
