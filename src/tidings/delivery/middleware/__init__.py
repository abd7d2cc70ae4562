"""What wraps every send, one concern per module: staleness, email-if-unseen, erasure,
metrics and logs, tracing, and the claims that settle a race with a cancellation.
``standard`` is the order the sender runs them in."""

from __future__ import annotations

import datetime as dt

from tidings import catalog
from tidings.delivery.middleware.claims import Claims
from tidings.delivery.middleware.erasure import Erasures
from tidings.delivery.middleware.observed import Observed
from tidings.delivery.middleware.staleness import Staleness
from tidings.delivery.middleware.traced import Traced
from tidings.delivery.middleware.unseen import UnlessSeen
from tidings.delivery.sender import Middleware
from tidings.inbox.service import InboxService
from tidings.kit import metrics
from tidings.kit.clock import Clock
from tidings.users.service import UsersService


def standard(
    types: catalog.Catalog,
    clock: Clock,
    inbox: InboxService,
    users: UsersService,
    measured: metrics.Metrics,
    lease: dt.timedelta,
) -> list[Middleware]:
    """The middleware every deployment runs, outermost first; the claims last, so that
    what they claim is what the others let through (``lease``: the send jobs')."""
    return [
        Traced(),
        Observed(clock, measured),
        UnlessSeen(inbox),
        Staleness(types, clock),
        Erasures(users),
        Claims(clock, lease),
    ]
