"""The failover circuit breaker, with in-memory providers and with two real SMTP servers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from tests.integration.email_providers.conftest import make_email, settings_for
from tests.smtp_sink import SmtpSink
from tidings.email.message import OutgoingEmail
from tidings.email.providers.base import (
    Accepted,
    Capabilities,
    PermanentSendError,
    TransientSendError,
)
from tidings.email.providers.failover import CircuitState, FailoverProvider
from tidings.email.providers.memory import InMemoryProvider
from tidings.email.providers.smtp import SmtpProvider
from tidings.kit.clock import FrozenClock


def transient(reply: str = "451 4.3.0 try later") -> TransientSendError:
    return TransientSendError(reply, provider="primary", code=int(reply[:3]))


def permanent(reply: str = "550 5.1.1 no such user") -> PermanentSendError:
    return PermanentSendError(reply, provider="primary", code=int(reply[:3]))


@pytest.fixture
def primary() -> InMemoryProvider:
    return InMemoryProvider("primary")


@pytest.fixture
def secondary() -> InMemoryProvider:
    return InMemoryProvider("secondary")


@pytest.fixture
def states() -> list[CircuitState]:
    return []


@pytest.fixture
def failover(
    primary: InMemoryProvider,
    secondary: InMemoryProvider,
    clock: FrozenClock,
    states: list[CircuitState],
) -> FailoverProvider:
    return FailoverProvider(
        primary,
        secondary,
        failure_threshold=3,
        reset_after=30.0,
        clock=clock,
        on_state_change=states.append,
    )


async def test_closed_sends_through_the_primary(
    failover: FailoverProvider, primary: InMemoryProvider, secondary: InMemoryProvider
) -> None:
    accepted = await failover.send(make_email(1))

    assert accepted.provider == "primary"
    assert failover.state is CircuitState.CLOSED
    assert (len(primary.sent), len(secondary.sent)) == (1, 0)


async def test_the_whole_cycle(
    failover: FailoverProvider,
    primary: InMemoryProvider,
    secondary: InMemoryProvider,
    clock: FrozenClock,
    states: list[CircuitState],
) -> None:
    primary.fail_next(transient(), transient(), transient())

    # Below the threshold, a transient failure is the caller's to retry.
    for n in (1, 2):
        with pytest.raises(TransientSendError):
            await failover.send(make_email(n))
        assert failover.state is CircuitState.CLOSED
    assert failover.consecutive_failures == 2

    # The third opens the circuit, and that message goes through the secondary.
    accepted = await failover.send(make_email(3))
    assert accepted.provider == "secondary"
    assert failover.state is CircuitState.OPEN

    # While open, the primary is left alone.
    clock.advance(29)
    await failover.send(make_email(4))
    assert primary.attempts == 3
    assert [e.subject for e in secondary.sent] == ["Message 3", "Message 4"]

    # Once the rest period is over, one send probes the primary; success closes.
    clock.advance(1)
    assert failover.state is CircuitState.HALF_OPEN
    accepted = await failover.send(make_email(5))
    assert accepted.provider == "primary"
    assert failover.state is CircuitState.CLOSED
    assert failover.consecutive_failures == 0

    await failover.send(make_email(6))
    assert [e.subject for e in primary.sent] == ["Message 5", "Message 6"]
    assert states == [CircuitState.OPEN, CircuitState.HALF_OPEN, CircuitState.CLOSED]


async def test_a_failed_probe_opens_the_circuit_for_another_period(
    failover: FailoverProvider,
    primary: InMemoryProvider,
    secondary: InMemoryProvider,
    clock: FrozenClock,
    states: list[CircuitState],
) -> None:
    primary.fail_next(transient(), transient(), transient(), transient())
    for n in range(3):
        with contextlib.suppress(TransientSendError):
            await failover.send(make_email(n))
    clock.advance(30)

    accepted = await failover.send(make_email(3))  # the probe fails ...

    assert accepted.provider == "secondary"  # ... and the message is not lost
    assert failover.state is CircuitState.OPEN
    clock.advance(29)
    assert failover.state is CircuitState.OPEN
    clock.advance(1)
    assert failover.state is CircuitState.HALF_OPEN
    await failover.send(make_email(4))
    assert failover.state is CircuitState.CLOSED
    assert states == [
        CircuitState.OPEN,
        CircuitState.HALF_OPEN,
        CircuitState.OPEN,
        CircuitState.HALF_OPEN,
        CircuitState.CLOSED,
    ]


async def test_permanent_errors_never_trip_the_circuit(
    failover: FailoverProvider, primary: InMemoryProvider, secondary: InMemoryProvider
) -> None:
    primary.fail_next(*(permanent() for _ in range(5)))

    for n in range(5):
        with pytest.raises(PermanentSendError) as raised:
            await failover.send(make_email(n))
        assert raised.value.reply == "550 5.1.1 no such user"

    assert failover.state is CircuitState.CLOSED
    assert secondary.attempts == 0


async def test_a_permanent_error_is_a_sign_of_life(
    failover: FailoverProvider, primary: InMemoryProvider
) -> None:
    """The primary answered, so the consecutive transient count starts over."""
    primary.fail_next(transient(), transient(), permanent(), transient(), transient())

    for n in range(5):
        with contextlib.suppress(TransientSendError, PermanentSendError):
            await failover.send(make_email(n))

    assert failover.state is CircuitState.CLOSED
    assert failover.consecutive_failures == 2


async def test_a_permanent_error_from_the_probe_closes_and_is_passed_on(
    failover: FailoverProvider, primary: InMemoryProvider, clock: FrozenClock
) -> None:
    primary.fail_next(transient(), transient(), transient(), permanent())
    for n in range(3):
        with contextlib.suppress(TransientSendError):
            await failover.send(make_email(n))
    clock.advance(30)

    with pytest.raises(PermanentSendError):
        await failover.send(make_email(3))
    assert failover.state is CircuitState.CLOSED


async def test_while_open_the_secondarys_errors_are_passed_on(
    failover: FailoverProvider, primary: InMemoryProvider, secondary: InMemoryProvider
) -> None:
    primary.fail_next(transient(), transient(), transient())
    secondary.fail_next(transient("421 4.7.0 secondary busy"), permanent("550 5.1.1 unknown"))
    for n in range(2):
        with contextlib.suppress(TransientSendError):
            await failover.send(make_email(n))

    with pytest.raises(TransientSendError, match="secondary busy"):
        await failover.send(make_email(2))  # opens, and the secondary fails too
    with pytest.raises(PermanentSendError, match="unknown"):
        await failover.send(make_email(3))
    assert failover.state is CircuitState.OPEN
    assert primary.attempts == 3


class GatedProvider:
    """Fails its first send; later sends wait until the test lets them through."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.attempts = 0

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(name="gated", max_message_bytes=1000)

    async def send(self, email: OutgoingEmail) -> Accepted:
        self.attempts += 1
        if self.attempts == 1:
            raise transient()
        await self.gate.wait()
        return Accepted(provider="gated")

    async def close(self) -> None:
        pass


async def test_one_probe_at_a_time(secondary: InMemoryProvider, clock: FrozenClock) -> None:
    primary = GatedProvider()
    failover = FailoverProvider(primary, secondary, failure_threshold=1, clock=clock)
    await failover.send(make_email(0))  # opens the circuit
    clock.advance(30)

    probe = asyncio.create_task(failover.send(make_email(1)))
    await asyncio.sleep(0)
    assert failover.state is CircuitState.HALF_OPEN
    others = await asyncio.gather(*(failover.send(make_email(n)) for n in (2, 3)))
    assert [a.provider for a in others] == ["secondary", "secondary"]

    primary.gate.set()
    assert (await probe).provider == "gated"
    assert failover.state is CircuitState.CLOSED
    assert primary.attempts == 2


async def test_capabilities_and_close(
    failover: FailoverProvider, primary: InMemoryProvider, secondary: InMemoryProvider
) -> None:
    assert failover.capabilities.name == "primary+secondary"
    await failover.close()
    assert primary.closed
    assert secondary.closed


@pytest.mark.parametrize(
    ("arguments", "message"),
    [({"failure_threshold": 0}, "failure_threshold"), ({"reset_after": -1.0}, "reset_after")],
)
def test_rejects_nonsense(
    arguments: dict[str, float],
    message: str,
    primary: InMemoryProvider,
    secondary: InMemoryProvider,
    clock: FrozenClock,
) -> None:
    with pytest.raises(ValueError, match=message):
        FailoverProvider(primary, secondary, clock=clock, **arguments)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def two_relays(
    clock: FrozenClock,
) -> AsyncIterator[tuple[SmtpSink, SmtpSink, FailoverProvider]]:
    async with SmtpSink() as first, SmtpSink() as second:
        provider = FailoverProvider(
            SmtpProvider(settings_for(first)),
            SmtpProvider(settings_for(second)),
            failure_threshold=3,
            reset_after=30.0,
            clock=clock,
        )
        try:
            yield first, second, provider
        finally:
            await provider.close()


async def test_fails_over_between_real_smtp_servers(clock: FrozenClock) -> None:
    async with two_relays(clock) as (first, second, provider):
        first.respond_with(["421 4.7.0 closing", "451 4.3.0 try later", "451 4.3.0 try later"])

        outcomes = []
        for n in range(4):
            try:
                outcomes.append((await provider.send(make_email(n))).provider)
            except TransientSendError as exc:
                outcomes.append(exc.reply)

        assert outcomes == ["421 4.7.0 closing", "451 4.3.0 try later", "smtp", "smtp"]
        assert provider.state is CircuitState.OPEN
        assert [r.message["Subject"] for r in await second.wait_for(2)] == [
            "Message 2",
            "Message 3",
        ]

        # The first relay recovers; after the rest period it takes over again, and its
        # 550 for a bad address is passed on without failing over.
        clock.advance(30)
        await provider.send(make_email(4))
        assert provider.state is CircuitState.CLOSED
        first.respond_with(["550 5.1.1 no such user"])
        with pytest.raises(PermanentSendError, match=r"550 5\.1\.1 no such user"):
            await provider.send(make_email(5))
        assert provider.state is CircuitState.CLOSED
        assert [r.message["Subject"] for r in await first.wait_for(1)] == ["Message 4"]
        assert len(second.received) == 2
