"""A sending-rate cap that makes callers wait their turn; it never drops a send."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable


class RateLimiter:
    """Spaces sends ``1/per_second`` apart, letting up to ``burst`` through at once.

    The generic cell rate algorithm (GCRA): one number, the theoretical arrival time of
    the next send, is all the state. Each caller reserves the next slot in the order it
    arrived and then sleeps until that slot, so waiting callers leave in FIFO order. A
    caller cancelled while it waits gives up its slot: the cap errs on the slow side.
    """

    def __init__(
        self,
        per_second: float,
        *,
        burst: int = 1,
        now: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not per_second > 0:
            raise ValueError("per_second must be positive")
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self.per_second = per_second
        self.burst = burst
        self._interval = 1.0 / per_second
        self._tolerance = (burst - 1) * self._interval
        self._now = now
        self._sleep = sleep
        self._next_at = -math.inf

    def reserve(self) -> float:
        """Take the next slot; returns how many seconds to wait before sending in it."""
        now = self._now()
        arrival = max(self._next_at, now)
        self._next_at = arrival + self._interval
        return max(0.0, arrival - self._tolerance - now)

    async def acquire(self) -> None:
        """Wait until this caller may send."""
        wait = self.reserve()
        if wait > 0:
            await self._sleep(wait)
