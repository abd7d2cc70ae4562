"""The jobs that carry a planned delivery to its channel: their kinds, and the job one
channel's plan makes."""

from __future__ import annotations

import datetime as dt
from typing import Any

from tidings.kit.queue import NewJob
from tidings.planning import planner
from tidings.planning.planner import Action

AVAILABLE_CHANNELS = frozenset({planner.IN_APP, planner.EMAIL})
"""The channels built in; a deployment adds the plugin channels it runs."""

EMAIL_JOB = "email"
IN_APP_JOB = "in_app"
CHANNEL_JOB = "channel"
"""A delivery on a plugin channel; its payload names the channel."""

_DELAYS = frozenset({planner.HoldReason.DELAYED, planner.HoldReason.WAITING_UNSEEN})


def send_job(
    plan: planner.ChannelPlan,
    delivery_id: str,
    user_id: str,
    in_app_item: str | None,
    lane: int,
    now: dt.datetime,
) -> NewJob | None:
    """The job that carries a delivery the plan sends now or later: email's, a plugin
    channel's, or a held in-app item's; None when there is nothing to carry (in-app
    delivered now, suppressed, or folded into a digest)."""
    if plan.action not in (Action.DELIVER, Action.HOLD):
        return None
    # A type's delay and the unseen wait count from now; quiet hours end at a time.
    delayed_from = now if plan.reason in _DELAYS else None
    payload: dict[str, Any] = {"delivery": delivery_id, "user": user_id}
    if plan.channel == planner.EMAIL:
        kind = EMAIL_JOB
        if plan.unless_seen and in_app_item is not None:
            payload["unless_seen"] = in_app_item
    elif plan.channel != planner.IN_APP:
        kind = CHANNEL_JOB
        payload["channel"] = plan.channel
    elif plan.action is Action.HOLD:
        kind = IN_APP_JOB
        payload["silent"] = plan.silent
    else:
        return None
    return NewJob(
        id=f"{kind}:{delivery_id}",
        kind=kind,
        payload=payload,
        lane=lane,
        run_at=plan.not_before,
        delayed_from=delayed_from,
    )
