"""The jobs ingest enqueues with the events it writes: their planning."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, Protocol

from tidings.kit import tracing
from tidings.kit.queue import NewJob

PLAN_JOB = "plan"
FANOUT_JOB = "fanout"

__all__ = ["FANOUT_JOB", "PLAN_JOB", "planning_jobs"]


class Written(Protocol):
    """An event just written (``service.Prepared``): what its planning job needs."""

    @property
    def event_id(self) -> str: ...

    @property
    def lane(self) -> int: ...

    @property
    def row(self) -> dict[str, Any]: ...

    @property
    def trace(self) -> dict[str, str] | None: ...


def planning_jobs(fresh: Sequence[Written], now: dt.datetime) -> list[NewJob]:
    """One planning job per lane for direct events; one fan-out job per topic event. An
    event to send later has a job of its own, a timer due at its ``send_at``."""
    by_lane: dict[int, dict[str, list[str]]] = {}
    traces: dict[int, list[dict[str, str] | None]] = {}
    new_jobs: list[NewJob] = []
    for item in fresh:
        send_at: dt.datetime | None = item.row["send_at"]
        later = send_at if send_at is not None and send_at > now else None
        if item.row["topic"] is not None:
            new_jobs.append(
                NewJob(
                    id=f"{FANOUT_JOB}:{item.event_id}:",
                    kind=FANOUT_JOB,
                    payload={"event": item.event_id, "after": None},
                    lane=item.lane,
                    run_at=later,
                    headers=item.trace,
                )
            )
        elif later is not None:
            new_jobs.append(
                NewJob(
                    id=f"{PLAN_JOB}:{item.event_id}",
                    kind=PLAN_JOB,
                    payload={
                        "events": [item.event_id],
                        "recipients": {item.event_id: item.row["recipients"]},
                    },
                    lane=item.lane,
                    run_at=later,
                    headers=item.trace,
                )
            )
        else:
            by_lane.setdefault(item.lane, {})[item.event_id] = item.row["recipients"]
            traces.setdefault(item.lane, []).append(item.trace)
    for lane, recipients in sorted(by_lane.items()):
        event_ids = list(recipients)
        new_jobs.append(
            NewJob(
                id=f"{PLAN_JOB}:{event_ids[0]}",
                kind=PLAN_JOB,
                # The recipients ride along so a partitioned queue can route each share
                # without reading the events back.
                payload={"events": event_ids, "recipients": recipients},
                lane=lane,
                headers=tracing.merged_headers(traces[lane]),
            )
        )
    return new_jobs
