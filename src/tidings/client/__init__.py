"""The Python SDK for producers: publish events, manage recipients and topics, ask what
became of an event. Sync and async, on httpx::

    from tidings.client import Tidings

    with Tidings("http://localhost:8000", api_key) as tidings:
        accepted = tidings.publish(
            "comment.created",
            recipients=["u-bob"],
            actor={"id": "u-ann", "name": "Ann"},
            data={"board": {"id": "b-1", "name": "Roadmap"},
                  "comment": {"id": "c-9", "text": "Looks good"}},
        )

Every publish carries an idempotency key (yours, or one generated for the call) that
stays the same across the client's own retries, so a retried request never publishes
twice. Retries happen on 429, 5xx and connection errors, with capped, jittered backoff;
never on another 4xx. Errors raise :class:`TidingsError` subclasses carrying the API's
error code, message and offending field.
"""

from tidings.client._core import DeprecatedType
from tidings.client.async_client import AsyncBatcher, AsyncTidings
from tidings.client.errors import (
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    RateLimited,
    ServerError,
    TidingsError,
    Unauthenticated,
    Unreachable,
)
from tidings.client.models import (
    Accepted,
    BroadcastReach,
    CancelledEvent,
    Delivery,
    DryRun,
    DryRunChannel,
    DryRunRecipient,
    Event,
    EventView,
    Profile,
    Retry,
    SubscribersChanged,
    Transition,
)
from tidings.client.sync_client import Batcher, Tidings

__all__ = [
    "Accepted",
    "AsyncBatcher",
    "AsyncTidings",
    "Batcher",
    "BroadcastReach",
    "CancelledEvent",
    "Conflict",
    "Delivery",
    "DeprecatedType",
    "DryRun",
    "DryRunChannel",
    "DryRunRecipient",
    "Event",
    "EventView",
    "Forbidden",
    "Invalid",
    "NotFound",
    "Profile",
    "RateLimited",
    "Retry",
    "ServerError",
    "SubscribersChanged",
    "Tidings",
    "TidingsError",
    "Transition",
    "Unauthenticated",
    "Unreachable",
]
