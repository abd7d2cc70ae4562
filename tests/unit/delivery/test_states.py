from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.delivery.states import (
    ALLOWED,
    TERMINAL,
    DeliveryState,
    InvalidTransition,
    can_transition,
    transition,
)

S = DeliveryState


@pytest.mark.parametrize(
    ("current", "target", "allowed"),
    [
        (S.PLANNED, S.DELIVERED, True),
        (S.PLANNED, S.SUPPRESSED, True),
        (S.SCHEDULED, S.SENT, True),
        (S.SENT, S.BOUNCED, True),
        (S.FAILED, S.SCHEDULED, True),
        (S.DELIVERED, S.PLANNED, False),
        (S.SUPPRESSED, S.DELIVERED, False),
        (S.BOUNCED, S.SENT, False),
        (S.SENT, S.SCHEDULED, False),
    ],
)
def test_transitions(current: DeliveryState, target: DeliveryState, allowed: bool) -> None:
    assert can_transition(current, target) is allowed
    if allowed:
        assert transition(current, target) is target
    else:
        with pytest.raises(InvalidTransition):
            transition(current, target)


def test_terminal_states() -> None:
    assert {S.BOUNCED, S.SUPPRESSED, S.DIGESTED} == TERMINAL


@given(st.lists(st.sampled_from(list(S)), max_size=20))
def test_no_walk_leaves_a_terminal_state(steps: list[DeliveryState]) -> None:
    state = S.PLANNED
    for step in steps:
        if can_transition(state, step):
            state = transition(state, step)
    assert set(ALLOWED[state]) <= set(S)
    if state in TERMINAL:
        assert not ALLOWED[state]
