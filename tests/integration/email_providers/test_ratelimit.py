"""The sending-rate cap: its waits, computed against a fake clock (no timing asserted)."""

from __future__ import annotations

import asyncio

import pytest

from tidings.email.providers._ratelimit import RateLimiter


class FakeTime:
    """A monotonic clock that moves only when slept on."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_waits_space_sends_evenly() -> None:
    time = FakeTime()
    limiter = RateLimiter(10, now=time)

    assert [limiter.reserve() for _ in range(5)] == pytest.approx([0, 0.1, 0.2, 0.3, 0.4])


def test_a_burst_goes_through_at_once_then_the_rate_holds() -> None:
    time = FakeTime()
    limiter = RateLimiter(10, burst=3, now=time)

    assert [limiter.reserve() for _ in range(5)] == pytest.approx([0, 0, 0, 0.1, 0.2])


def test_idle_time_refills_but_never_beyond_the_burst() -> None:
    time = FakeTime()
    limiter = RateLimiter(2, burst=2, now=time)
    for _ in range(4):
        limiter.reserve()

    time.now = 60.0  # a long pause
    assert [limiter.reserve() for _ in range(4)] == pytest.approx([0, 0, 0.5, 1.0])


async def test_n_sends_at_rate_r_take_n_over_r() -> None:
    """N sends at R per second leave the last one (N - 1) / R after the first."""
    time = FakeTime()
    limiter = RateLimiter(25, now=time, sleep=time.sleep)

    for _ in range(100):
        await limiter.acquire()

    assert time.now == pytest.approx(99 / 25)
    assert len(time.slept) == 99


async def test_concurrent_callers_leave_in_the_order_they_came() -> None:
    time = FakeTime()
    gates: list[asyncio.Future[None]] = []
    order: list[int] = []

    async def sleep(seconds: float) -> None:
        gate = asyncio.get_running_loop().create_future()
        gates.append(gate)
        await gate

    limiter = RateLimiter(5, now=time, sleep=sleep)

    async def send(n: int) -> None:
        await limiter.acquire()
        order.append(n)

    tasks = [asyncio.create_task(send(n)) for n in range(4)]
    await asyncio.sleep(0)
    assert order == [0]  # the first needs no wait; the others hold their slots
    for gate in gates:
        gate.set_result(None)
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("rate", "burst", "message"),
    [(0, 1, "per_second"), (-1, 1, "per_second"), (1, 0, "burst")],
)
def test_rejects_nonsense(rate: float, burst: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RateLimiter(rate, burst=burst)
