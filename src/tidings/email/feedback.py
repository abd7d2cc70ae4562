"""Provider feedback, whatever its format: what a provider said about one message to one
address (a bounce, a complaint, a delivery).

The parsers turn each provider's format into ``Feedback``: ``feedback_generic`` (the
generic JSON signed with a shared secret), ``feedback_sns`` (an Amazon SNS envelope) and
``feedback_ses`` (the SES event inside it). They are pure: no network, no database.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass


class FeedbackKind(enum.StrEnum):
    """What happened to the message: bounced for good or for now, complained of, delivered."""

    HARD_BOUNCE = "hard_bounce"
    SOFT_BOUNCE = "soft_bounce"
    COMPLAINT = "complaint"
    DELIVERED = "delivered"


@dataclass(frozen=True)
class Feedback:
    """What a provider said about one message to one address."""

    kind: FeedbackKind
    address: str
    provider: str
    message_id: str | None = None  # RFC 5322 form, "<local@domain>"
    provider_message_id: str | None = None
    detail: str | None = None
    occurred_at: dt.datetime | None = None


MAX_DETAIL = 1000
"""The longest ``Feedback.detail`` kept: a provider's words past it are cut."""
