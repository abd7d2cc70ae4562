"""Per-caller request rate limits: a token bucket per API key and per end user.

``RateLimits`` keeps the buckets in the process: with several API processes behind a
load balancer each one allows the configured rate, so the deployment as a whole allows
that many times it. ``SharedRateLimits`` keeps them in Redis, one bucket per caller for
every process (``TIDINGS_RATE_LIMIT_BACKEND=redis``); if Redis does not answer, requests
are let through (and logged) rather than refused: the limit protects Tidings, and an
outage of its cache should not become an outage of its API.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from tidings.kit import errors

log = logging.getLogger(__name__)

_MAX_BUCKETS = 100_000


class Limiter(Protocol):
    """What the API's dependencies need of a rate limiter."""

    async def acquire(self, caller: str) -> None:
        """Spend one request of ``caller``'s allowance, or raise ``errors.RateLimited``."""
        ...

    async def close(self) -> None: ...


def _refused(per_second: float, burst: int, tokens: float) -> errors.RateLimited:
    retry_after = max(1, math.ceil((1.0 - tokens) / per_second))
    return errors.RateLimited(
        f"Too many requests: this caller may send {per_second:g} a second "
        f"(bursts of {burst}). Retry after {retry_after} s.",
        retry_after=retry_after,
        field="authorization",
    )


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
        raise _refused(self.per_second, self.burst, bucket.tokens)

    async def acquire(self, caller: str) -> None:
        self.take(caller)

    async def close(self) -> None:
        """Nothing to release: the buckets are in the process."""

    def _forget_full(self, now: float) -> None:
        """Drop the buckets that have refilled: forgetting them changes nothing."""
        refill = self.burst / self.per_second
        for caller in [c for c, b in self._buckets.items() if now - b.updated >= refill]:
            del self._buckets[caller]
        if len(self._buckets) >= _MAX_BUCKETS:
            self._buckets.clear()


# KEYS[1] the bucket; ARGV: rate per second, burst. The clock is Redis's, so processes
# with skewed clocks share one timeline. Returns {1 if allowed else 0, tokens left}.
_TAKE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'updated')
local tokens = tonumber(state[1]) or burst
local updated = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - updated) * rate)
local allowed = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'updated', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {allowed, tostring(tokens)}
"""


class SharedRateLimits:
    """The same token buckets as ``RateLimits``, in Redis: one allowance per caller for
    the whole deployment. A bucket expires once it would be full again."""

    def __init__(self, redis_url: str, prefix: str, per_second: float, burst: int) -> None:
        self.per_second = per_second
        self.burst = max(burst, 1)
        self._prefix = prefix
        self._redis = aioredis.Redis.from_url(
            redis_url, decode_responses=True, socket_connect_timeout=1.0, socket_timeout=1.0
        )
        self._take = self._redis.register_script(_TAKE)
        self._failing = False

    @property
    def enabled(self) -> bool:
        return self.per_second > 0

    async def acquire(self, caller: str) -> None:
        if not self.enabled:
            return
        try:
            allowed, tokens = await self._take(
                keys=[f"{self._prefix}:rate:{caller}"], args=[self.per_second, self.burst]
            )
        except RedisError as exc:
            if not self._failing:
                log.warning("rate limits are off until Redis answers again: %s", exc)
            self._failing = True
            return
        if self._failing:
            log.warning("Redis answers again; rate limits are back on")
            self._failing = False
        if not int(allowed):
            raise _refused(self.per_second, self.burst, float(tokens))

    async def close(self) -> None:
        await self._redis.aclose()
