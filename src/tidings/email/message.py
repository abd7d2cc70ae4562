"""What flows between the email pipeline's stages: plain, immutable data."""

from __future__ import annotations

from dataclasses import dataclass, field

from tidings.catalog.email_templates import RenderedEmail

__all__ = ["OutgoingEmail", "RenderedEmail"]


@dataclass(frozen=True)
class OutgoingEmail:
    """A finished message, ready for a provider.

    ``raw`` is the whole RFC 5322 source, already DKIM-signed. ``message_id`` is derived
    from the delivery, so a message sent twice after a crash carries the same id.
    """

    delivery_id: str
    message_id: str
    sender: str
    recipient: str
    raw: bytes
    subject: str
    headers: dict[str, str] = field(default_factory=dict)
