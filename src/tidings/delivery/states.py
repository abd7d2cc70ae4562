"""The delivery state machine (pure)."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import Any

from tidings.kit import ids


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


def first_transitions(
    rows: Sequence[Mapping[str, Any]], *, stage: str | None = None, attempt: int | None = None
) -> list[dict[str, Any]]:
    """The transitions a delivery row stands for while it has not changed: ``planned``,
    then its state, both at its creation. Their ids are derived, so logging them twice
    writes them once."""
    steps: list[dict[str, Any]] = []
    for row in rows:
        for step in dict.fromkeys((S.PLANNED.value, row["state"])):
            first = step == S.PLANNED.value
            steps.append(
                {
                    "id": ids.derived_id(row["id"], step),
                    "delivery_id": row["id"],
                    "state": step,
                    "reason": None if first else row["reason"],
                    "detail": None if first else row["detail"],
                    "at": row["created_at"],
                    "stage": stage,
                    "attempt": attempt,
                }
            )
    return steps
