"""Failover: a secondary provider takes over while the primary keeps failing."""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Callable

from tidings.email.message import OutgoingEmail
from tidings.email.providers.base import (
    Accepted,
    Capabilities,
    EmailProvider,
    PermanentSendError,
    TransientSendError,
)
from tidings.kit.clock import Clock


class CircuitState(enum.StrEnum):
    CLOSED = "closed"
    """The primary is healthy: everything goes through it."""
    OPEN = "open"
    """The primary kept failing: everything goes through the secondary."""
    HALF_OPEN = "half_open"
    """The rest period is over: the next send probes the primary."""


class FailoverProvider:
    """A circuit breaker around a primary provider, with a secondary behind it.

    ``failure_threshold`` consecutive transient failures of the primary open the
    circuit: that message and the following ones go through the secondary. After
    ``reset_after`` seconds one send probes the primary again (half-open; sends racing
    it use the secondary); success closes the circuit, another transient failure opens
    it for a new period and the message goes through the secondary.

    A permanent error is the primary answering that this message cannot be delivered:
    it says nothing bad about the primary, so it is passed on and counts as a sign of
    life. While the circuit is open, the secondary's errors are passed on.

    ``on_state_change`` is called with each new state, for metrics and logs.
    """

    def __init__(
        self,
        primary: EmailProvider,
        secondary: EmailProvider,
        *,
        failure_threshold: int = 3,
        reset_after: float = 30.0,
        clock: Clock,
        on_state_change: Callable[[CircuitState], None] | None = None,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if reset_after < 0:
            raise ValueError("reset_after must not be negative")
        self.primary = primary
        self.secondary = secondary
        self.failure_threshold = failure_threshold
        self.reset_after = dt.timedelta(seconds=reset_after)
        self._clock = clock
        self._on_state_change = on_state_change
        self._failures = 0
        self._opened_at: dt.datetime | None = None
        self._probing = False
        p, s = primary.capabilities, secondary.capabilities
        self._capabilities = Capabilities(
            name=f"{p.name}+{s.name}",
            max_message_bytes=min(p.max_message_bytes, s.max_message_bytes),
            max_per_second=p.max_per_second,
            connections=p.connections,
        )

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    @property
    def state(self) -> CircuitState:
        """The circuit's state now; an open circuit turns half-open once its time is up."""
        if self._opened_at is None:
            return CircuitState.CLOSED
        if self._probing or self._clock.now() - self._opened_at >= self.reset_after:
            return CircuitState.HALF_OPEN
        return CircuitState.OPEN

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    async def send(self, email: OutgoingEmail) -> Accepted:
        """Send through the primary, or through the secondary while the circuit is open.

        Raises:
            TransientSendError: the primary failed below the threshold, or the
                secondary failed while the circuit was open.
            PermanentSendError: whichever provider was used refused the message.
        """
        state = self.state
        if state is CircuitState.OPEN or (state is CircuitState.HALF_OPEN and self._probing):
            return await self.secondary.send(email)
        probing = state is CircuitState.HALF_OPEN
        if probing:
            self._probing = True
            self._notify(CircuitState.HALF_OPEN)
        try:
            accepted = await self.primary.send(email)
        except TransientSendError:
            self._failures += 1
            if probing:
                self._probing = False
                self._open()
            elif self._opened_at is None and self._failures >= self.failure_threshold:
                self._open()
            if self._opened_at is None:
                raise
            # The circuit is open (this failure opened it, or a concurrent one did).
            return await self.secondary.send(email)
        except PermanentSendError:
            self._close()
            raise
        except BaseException:
            # Cancelled mid-probe: the primary proved nothing either way.
            if probing:
                self._probing = False
            raise
        self._close()
        return accepted

    async def close(self) -> None:
        try:
            await self.primary.close()
        finally:
            await self.secondary.close()

    def _open(self) -> None:
        self._opened_at = self._clock.now()
        self._notify(CircuitState.OPEN)

    def _close(self) -> None:
        self._failures = 0
        self._probing = False
        if self._opened_at is not None:
            self._opened_at = None
            self._notify(CircuitState.CLOSED)

    def _notify(self, state: CircuitState) -> None:
        if self._on_state_change is not None:
            self._on_state_change(state)
