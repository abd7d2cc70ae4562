from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from tidings.kit.queue import backoff


@given(attempts=st.integers(min_value=1, max_value=60), seed=st.integers())
def test_backoff_is_jittered_within_its_bounds(attempts: int, seed: int) -> None:
    delay = backoff(attempts, base=1.0, cap=300.0, rng=random.Random(seed))
    ceiling = min(300.0, 2 ** (attempts - 1))
    assert ceiling / 2 <= delay <= ceiling


def test_backoff_grows_then_caps() -> None:
    rng = random.Random(7)
    # Two attempts apart, the shortest later delay exceeds the longest earlier one.
    for n in range(1, 5):
        longest = max(backoff(n, base=1.0, cap=60.0, rng=rng) for _ in range(200))
        shortest = min(backoff(n + 2, base=1.0, cap=60.0, rng=rng) for _ in range(200))
        assert shortest >= longest
    assert all(30.0 <= backoff(50, base=1.0, cap=60.0, rng=rng) <= 60.0 for _ in range(200))


def test_backoff_spreads_retries() -> None:
    rng = random.Random(1)
    assert len({backoff(5, base=1.0, cap=60.0, rng=rng) for _ in range(50)}) == 50
