"""Priority of a notification type, and the delivery lane it maps to."""

from __future__ import annotations

import enum


class Priority(enum.StrEnum):
    """How urgent a notification type is; decides which lane its work runs in."""

    CRITICAL = "critical"
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"

    @property
    def lane(self) -> int:
        """The lane number: 0 for critical (served first) up to 3 for low."""
        return _LANES[self]


_LANES: dict[Priority, int] = {
    Priority.CRITICAL: 0,
    Priority.HIGH: 1,
    Priority.NORMAL: 2,
    Priority.LOW: 3,
}
