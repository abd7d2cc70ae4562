"""Channels beyond the in-app inbox and email, added as plugins: the public interface.

A plugin is a ``Channel`` subclass that a package declares under the
``tidings.channels`` entry point group::

    [project.entry-points."tidings.channels"]
    webpush = "tidings_webpush:WebPushChannel"

A plugin imports nothing of Tidings but this package. Everything here is public and
stable; docs/channels.md describes it with an example.
"""

from __future__ import annotations

# The interface and the registry come first: the catalog imports them while it loads.
from tidings.channels.interface import (
    Address,
    AddressBook,
    Channel,
    ChannelServices,
    ChannelUnavailable,
    Content,
    Delivered,
    Delivery,
    Failed,
    NoAddress,
    Outcome,
    Recipient,
    Retry,
)
from tidings.channels.registry import GROUP, PluginError, discover, installed, names

# isort: split
from tidings.auth.dependencies import EndUser
from tidings.catalog.channel_section import ChannelSection
from tidings.catalog.templates import RenderError
from tidings.channels.addresses import MemoryAddressBook
from tidings.kit.errors import Invalid, NotFound, TidingsError

__all__ = [
    "GROUP",
    "Address",
    "AddressBook",
    "Channel",
    "ChannelSection",
    "ChannelServices",
    "ChannelUnavailable",
    "Content",
    "Delivered",
    "Delivery",
    "EndUser",
    "Failed",
    "Invalid",
    "MemoryAddressBook",
    "NoAddress",
    "NotFound",
    "Outcome",
    "PluginError",
    "Recipient",
    "RenderError",
    "Retry",
    "TidingsError",
    "discover",
    "installed",
    "names",
]
