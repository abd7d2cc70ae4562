"""The provider interface every email provider implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from tidings.email.message import OutgoingEmail


@dataclass(frozen=True)
class Capabilities:
    """What a provider is and can do, as data. ``connections``: how many messages it
    sends at once (more handed to it wait their turn); None when it has no such limit."""

    name: str
    max_message_bytes: int
    max_per_second: float | None = None
    connections: int | None = None


@dataclass(frozen=True)
class Accepted:
    """The provider took the message; ``provider_id`` is its own id for it, if any."""

    provider: str
    provider_id: str | None = None
    reply: str = ""


class SendError(Exception):
    """A message was not accepted."""

    def __init__(self, reply: str, *, provider: str, code: int | None = None) -> None:
        super().__init__(reply)
        self.reply = reply
        self.provider = provider
        self.code = code


class TransientSendError(SendError):
    """Worth retrying later: connection trouble, SMTP 4xx, throttling."""


class PermanentSendError(SendError):
    """Never worth retrying as is: SMTP 5xx, a rejected address."""


class EmailProvider(Protocol):
    """Sends finished messages."""

    @property
    def capabilities(self) -> Capabilities: ...

    async def send(self, email: OutgoingEmail) -> Accepted:
        """Hand one message over.

        Raises:
            TransientSendError: try again later.
            PermanentSendError: do not try again.
        """
        ...

    async def close(self) -> None: ...
