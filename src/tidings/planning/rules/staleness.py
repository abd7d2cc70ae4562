"""Staleness: a notification older than its type's maximum age is no longer worth sending."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any


def stale_at(created_at: dt.datetime, max_age: dt.timedelta | None) -> dt.datetime | None:
    """The instant after which a notification created at ``created_at`` is stale; None: never."""
    return None if max_age is None else created_at + max_age


def is_stale(created_at: dt.datetime, now: dt.datetime, max_age: dt.timedelta | None) -> bool:
    """Whether, at ``now``, more than ``max_age`` has passed since ``created_at``."""
    deadline = stale_at(created_at, max_age)
    return deadline is not None and now > deadline


def counted_from(event: Mapping[str, Any]) -> dt.datetime:
    """The moment an event's notifications are about, from which their age counts: the
    time its producer asked them to be sent at (``send_at``), else its acceptance."""
    send_at: dt.datetime | None = event.get("send_at")
    accepted: dt.datetime = event["created_at"]
    return accepted if send_at is None else send_at
