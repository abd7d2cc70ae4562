"""The planner: pure decisions over plain data, no I/O."""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

IN_APP = "in_app"
EMAIL = "email"


class SuppressionReason(enum.StrEnum):
    """Machine-readable reasons a delivery does not happen."""

    CHANNEL_UNAVAILABLE = "channel_unavailable"
    NO_ADDRESS = "no_address"
    ADDRESS_SUPPRESSED = "address_suppressed"
    OPTED_OUT = "opted_out"


@dataclass(frozen=True)
class Recipient:
    id: str
    name: str | None = None
    email: str | None = None
    locale: str | None = None
    timezone: str | None = None

    @classmethod
    def from_profile(cls, user_id: str, profile: Mapping[str, Any] | None) -> Recipient:
        if profile is None:
            return cls(id=user_id)
        return cls(
            id=user_id,
            name=profile.get("name"),
            email=profile.get("email"),
            locale=profile.get("locale"),
            timezone=profile.get("timezone"),
        )

    def as_context(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "email": self.email,
            "locale": self.locale,
            "timezone": self.timezone,
        }


@dataclass(frozen=True)
class Facts:
    """What is known about one recipient that bears on one notification."""

    mandatory: bool = False
    opted_out: frozenset[str] = field(default_factory=frozenset)
    address_suppressed: bool = False


@dataclass(frozen=True)
class Decision:
    """One channel for one recipient: deliver, or suppress with a reason."""

    channel: str
    deliver: bool
    reason: SuppressionReason | None = None


def plan_recipient(
    declared: Collection[str],
    available: Collection[str],
    recipient: Recipient,
    facts: Facts | None = None,
) -> list[Decision]:
    """Decide each channel a type declares, for one recipient.

    ``declared`` are the type's channels, ``available`` those this deployment can deliver.
    Rules apply in order — channel, address, suppression list, preferences — and the
    first "no" is the recorded reason. A mandatory category ignores opt-outs, never the
    suppression list: mail to an address that bounced would bounce again.
    """
    facts = facts or Facts()
    return [_decide(channel, available, recipient, facts) for channel in sorted(declared)]


def _decide(
    channel: str, available: Collection[str], recipient: Recipient, facts: Facts
) -> Decision:
    if channel not in available:
        return Decision(channel, False, SuppressionReason.CHANNEL_UNAVAILABLE)
    if channel == EMAIL:
        if not recipient.email:
            return Decision(channel, False, SuppressionReason.NO_ADDRESS)
        if facts.address_suppressed:
            return Decision(channel, False, SuppressionReason.ADDRESS_SUPPRESSED)
    if channel in facts.opted_out and not facts.mandatory:
        return Decision(channel, False, SuppressionReason.OPTED_OUT)
    return Decision(channel, True)
