"""Email providers behind one interface: SMTP, the built-in mail catcher, Amazon SES.

``build_provider`` picks one from settings; the modules ``smtp``, ``catcher``, ``ses``,
``failover`` and ``memory`` (the in-memory twin for tests) hold the implementations.
"""

from tidings.email.providers.base import (
    Accepted,
    Capabilities,
    EmailProvider,
    PermanentSendError,
    SendError,
    TransientSendError,
)
from tidings.email.providers.factory import ProviderConfig, build_provider

__all__ = [
    "Accepted",
    "Capabilities",
    "EmailProvider",
    "PermanentSendError",
    "ProviderConfig",
    "SendError",
    "TransientSendError",
    "build_provider",
]
