"""The delivery state machine (pure)."""

from __future__ import annotations

import enum


class DeliveryState(enum.StrEnum):
    PLANNED = "planned"
    SCHEDULED = "scheduled"
    SENT = "sent"
    DELIVERED = "delivered"
    FAILED = "failed"
    BOUNCED = "bounced"
    SUPPRESSED = "suppressed"
    # Folded into a digest: the digest's own deliveries carry it from there.
    DIGESTED = "digested"


S = DeliveryState

ALLOWED: dict[DeliveryState, frozenset[DeliveryState]] = {
    S.PLANNED: frozenset({S.SCHEDULED, S.SENT, S.DELIVERED, S.FAILED, S.SUPPRESSED}),
    S.SCHEDULED: frozenset({S.SCHEDULED, S.SENT, S.DELIVERED, S.FAILED, S.SUPPRESSED, S.DIGESTED}),
    S.SENT: frozenset({S.DELIVERED, S.FAILED, S.BOUNCED}),
    S.DELIVERED: frozenset({S.BOUNCED}),
    S.FAILED: frozenset({S.SCHEDULED}),
    S.BOUNCED: frozenset(),
    S.SUPPRESSED: frozenset(),
    S.DIGESTED: frozenset(),
}

# The order of states along a delivery's life, for transitions recorded in the same instant.
STATE_ORDER = {state.value: rank for rank, state in enumerate(DeliveryState)}

TERMINAL = frozenset(state for state, nxt in ALLOWED.items() if not nxt)


class InvalidTransition(ValueError):
    def __init__(self, current: DeliveryState, target: DeliveryState) -> None:
        super().__init__(f"a delivery cannot go from {current} to {target}")
        self.current = current
        self.target = target


def can_transition(current: DeliveryState, target: DeliveryState) -> bool:
    return target in ALLOWED[current]


def transition(current: DeliveryState, target: DeliveryState) -> DeliveryState:
    """The new state, or InvalidTransition when the machine does not allow the move."""
    if not can_transition(current, target):
        raise InvalidTransition(current, target)
    return target
