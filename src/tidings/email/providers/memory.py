"""The in-memory twin of a provider, for tests: records sends, fails on request."""

from __future__ import annotations

from collections import deque

from tidings.email.message import OutgoingEmail
from tidings.email.providers.base import Accepted, Capabilities, SendError


class InMemoryProvider:
    """Keeps what it was given in ``sent``; ``fail_next`` queues errors to raise instead.

    Each queued error is raised by one ``send``, in order; once the queue is empty,
    sends succeed again.
    """

    def __init__(self, name: str = "memory", *, max_message_bytes: int = 10 * 1024 * 1024) -> None:
        self.name = name
        self._capabilities = Capabilities(name=name, max_message_bytes=max_message_bytes)
        self.sent: list[OutgoingEmail] = []
        self.attempts = 0
        self.closed = False
        self._failures: deque[SendError] = deque()

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    def fail_next(self, *errors: SendError) -> None:
        """Raise these errors, one per send, before accepting again."""
        self._failures.extend(errors)

    async def send(self, email: OutgoingEmail) -> Accepted:
        """Record the message, or raise the next queued error."""
        self.attempts += 1
        if self._failures:
            raise self._failures.popleft()
        self.sent.append(email)
        return Accepted(
            provider=self.name, provider_id=f"{self.name}-{len(self.sent)}", reply="250 ok"
        )

    async def close(self) -> None:
        self.closed = True
