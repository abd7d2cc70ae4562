"""Per-caller request rate limits: a token bucket per API key and per end user.

The buckets live in the process: with several API processes behind a load balancer each
one allows the configured rate, so the deployment as a whole allows that many times it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from tidings.kit import errors

_MAX_BUCKETS = 100_000


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimits:
    """Allows each caller ``per_second`` requests a second on average and bursts of up to
    ``burst``; ``per_second`` of 0 turns the limit off."""

    def __init__(
        self,
        per_second: float,
        burst: int,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_second = per_second
        self.burst = max(burst, 1)
        self._monotonic = monotonic
        self._buckets: dict[str, _Bucket] = {}

    @property
    def enabled(self) -> bool:
        """Whether requests are limited at all."""
        return self.per_second > 0

    def take(self, caller: str) -> None:
        """Spend one request of ``caller``'s allowance.

        Raises:
            errors.RateLimited: the allowance is spent; the error says when to retry.
        """
        if not self.enabled:
            return
        now = self._monotonic()
        bucket = self._buckets.get(caller)
        if bucket is None:
            if len(self._buckets) >= _MAX_BUCKETS:
                self._forget_full(now)
            bucket = self._buckets[caller] = _Bucket(float(self.burst), now)
        else:
            elapsed = max(now - bucket.updated, 0.0)
            bucket.tokens = min(float(self.burst), bucket.tokens + elapsed * self.per_second)
            bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return
        wait = (1.0 - bucket.tokens) / self.per_second
        retry_after = max(1, math.ceil(wait))
        raise errors.RateLimited(
            f"Too many requests: this caller may send {self.per_second:g} a second "
            f"(bursts of {self.burst}). Retry after {retry_after} s.",
            retry_after=retry_after,
            field="authorization",
        )

    def _forget_full(self, now: float) -> None:
        """Drop the buckets that have refilled: forgetting them changes nothing."""
        refill = self.burst / self.per_second
        for caller in [c for c, b in self._buckets.items() if now - b.updated >= refill]:
            del self._buckets[caller]
        if len(self._buckets) >= _MAX_BUCKETS:
            self._buckets.clear()
