"""The planning job's shape: which recipients it plans, how it is cut per recipient
partition, split per event when it fails, and weighed; and the job that plans one page
of a topic's subscribers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tidings.events.jobs import PLAN_JOB
from tidings.kit.queue import Job, NewJob, partition_of


def planned_for(
    payload: Mapping[str, Any], found: Mapping[str, Mapping[str, Any]]
) -> list[tuple[str, list[str]]]:
    """(event id, recipients) of a planning job: the recipients it names (one partition's
    share, or a topic's page), or else every recipient the event lists."""
    named: Mapping[str, Sequence[str]] | None = payload.get("recipients")
    return [
        (
            event_id,
            list(named[event_id])
            if named is not None and event_id in named
            else list(found[event_id]["recipients"] or ()),
        )
        for event_id in payload["events"]
    ]


def split(job: Job) -> list[NewJob]:
    """A failing multi-event planning job, as one job per event, so one bad event
    cannot hold back the others."""
    if job.kind != PLAN_JOB or len(job.payload["events"]) < 2:
        return []
    recipients = job.payload.get("recipients")
    # One partition's share names its recipients: its pieces must not take the ids of
    # another partition's pieces of the same job.
    share = (
        ""
        if recipients is None
        else "/" + min((user for users in recipients.values() for user in users), default="")
    )
    return [
        NewJob(
            id=f"{job.id}/{event_id}{share}",
            kind=PLAN_JOB,
            payload={"events": [event_id]}
            if recipients is None
            else {"events": [event_id], "recipients": {event_id: recipients[event_id]}},
            lane=job.lane,
        )
        for event_id in job.payload["events"]
    ]


def partition(payload: Mapping[str, Any], partitions: int) -> dict[int, dict[str, Any]]:
    """A planning job cut into one job per recipient partition: each share lists the
    events that have recipients there, and those recipients."""
    recipients: Mapping[str, Sequence[str]] | None = payload.get("recipients")
    if recipients is None:
        # Written before planning jobs carried their recipients: read them back.
        return {0: dict(payload)}
    shares: dict[int, dict[str, list[str]]] = {}
    for event_id in payload["events"]:
        for user in recipients.get(event_id, ()):
            share = shares.setdefault(partition_of(user, partitions), {})
            share.setdefault(event_id, []).append(user)
    return {
        partition: {"events": list(share), "recipients": share}
        for partition, share in shares.items()
    }


def weight(job: Job) -> int:
    """How much work a planning job is: its events, so one claim is sized to a batch."""
    return len(job.payload.get("events", ())) or 1


def page_job(event_id: str, after: str | None, page: Sequence[str], lane: int) -> NewJob:
    """The planning job of one page of a topic event's subscribers (those after
    ``after``), on a partitioned queue: cut per recipient partition as it is queued."""
    return NewJob(
        id=f"{PLAN_JOB}:{event_id}:{after or ''}",
        kind=PLAN_JOB,
        payload={"events": [event_id], "recipients": {event_id: list(page)}},
        lane=lane,
    )
