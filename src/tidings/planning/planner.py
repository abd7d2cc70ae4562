"""The planner: pure decisions over plain data, no I/O."""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

IN_APP = "in_app"


class SuppressionReason(enum.StrEnum):
    """Machine-readable reasons a delivery does not happen."""

    CHANNEL_UNAVAILABLE = "channel_unavailable"


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
class Decision:
    """One channel for one recipient: deliver, or suppress with a reason."""

    channel: str
    deliver: bool
    reason: SuppressionReason | None = None


def plan_recipient(
    declared: Collection[str], available: Collection[str], recipient: Recipient
) -> list[Decision]:
    """Decide each channel a type declares, for one recipient.

    ``declared`` are the type's channels, ``available`` those this deployment can deliver.
    """
    del recipient  # the decisions layered on later (preferences, quiet hours…) read it
    return [
        Decision(channel, True)
        if channel in available
        else Decision(channel, False, SuppressionReason.CHANNEL_UNAVAILABLE)
        for channel in sorted(declared)
    ]
