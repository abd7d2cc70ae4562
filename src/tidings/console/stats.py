"""The numbers behind the console's live charts, counted from the database.

Counting rows rather than reading one process's metrics gives every node of a
scaled-out deployment the same picture.
"""

from __future__ import annotations

import bisect
import datetime as dt
import math
from collections.abc import Sequence
from typing import Any

from tidings.console import repository
from tidings.kit.db import Database
from tidings.kit.tables import events, every_delivery

MINUTES = 30
"""How far back the charts look, one point per minute."""
LATENCY_SAMPLE = 5000
"""At most this many recent deliveries feed the latency percentiles."""


def minute_edges(now: dt.datetime, minutes: int = MINUTES) -> list[dt.datetime]:
    """``minutes + 1`` edges of one-minute buckets; the last bucket holds ``now``."""
    current = now.replace(second=0, microsecond=0)
    first = current - dt.timedelta(minutes=minutes - 1)
    return [first + dt.timedelta(minutes=i) for i in range(minutes + 1)]


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """The nearest-rank percentile of ``values`` (None when there are none)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def latency_per_bucket(
    finished: Sequence[tuple[dt.datetime, dt.datetime]], edges: Sequence[dt.datetime]
) -> dict[str, list[float | None]]:
    """p50 and p95 of accept-to-done seconds, per bucket of the time the delivery was done."""
    buckets: list[list[float]] = [[] for _ in edges[:-1]]
    for accepted, done in finished:
        slot = bisect.bisect_right(edges, done) - 1
        if 0 <= slot < len(buckets):
            buckets[slot].append(max(0.0, (done - accepted).total_seconds()))
    return {
        "p50": [percentile(b, 0.5) for b in buckets],
        "p95": [percentile(b, 0.95) for b in buckets],
    }


def window_latency(
    finished: Sequence[tuple[dt.datetime, dt.datetime]], edges: Sequence[dt.datetime]
) -> dict[str, float | None]:
    """p50 and p95 of accept-to-done seconds over the whole window the charts show."""
    seconds = [
        max(0.0, (done - accepted).total_seconds())
        for accepted, done in finished
        if edges[0] <= done < edges[-1]
    ]
    return {"p50": percentile(seconds, 0.5), "p95": percentile(seconds, 0.95)}


def legend(
    accepted: Sequence[int], planned: Sequence[int], latency: dict[str, float | None]
) -> dict[str, Any]:
    """What the charts' legends say: the window's totals and its latency percentiles.

    Not the last point of each line: that is the current minute, which has only just
    begun, so it reads 0 while the line peaks a few minutes back.
    """
    return {
        "minutes": MINUTES,
        "events": sum(accepted),
        "deliveries": sum(planned),
        "latency_seconds": latency,
    }


async def snapshot(db: Database, now: dt.datetime) -> dict[str, Any]:
    """Throughput, latency, queue depth, delivery states and dead letters, as of ``now``."""
    edges = minute_edges(now)
    async with db.reader() as conn:
        accepted = await repository.counts_per_bucket(conn, events, edges)
        planned = await repository.counts_per_bucket(conn, every_delivery(), edges)
        finished = await repository.finished_since(conn, edges[0], LATENCY_SAMPLE)
        queue = await repository.queue_depth(conn, now)
        states = await repository.states_since(conn, now - dt.timedelta(hours=1))
        dead = await repository.dead_letter_total(conn)
    return {
        "at": now.isoformat(),
        "minutes": [edge.strftime("%H:%M") for edge in edges[:-1]],
        "events_per_minute": accepted,
        "deliveries_per_minute": planned,
        "latency_seconds": latency_per_bucket(finished, edges),
        "legend": legend(accepted, planned, window_latency(finished, edges)),
        "queue": {
            "due": sum(queue["due"].values()),
            "later": sum(queue["later"].values()),
            "due_per_lane": {str(lane): n for lane, n in sorted(queue["due"].items())},
        },
        "deliveries_last_hour": states,
        "dead_letters": dead,
    }
