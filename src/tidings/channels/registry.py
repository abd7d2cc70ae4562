"""Finding the installed channel plugins: the ``tidings.channels`` entry point group."""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from importlib import metadata
from types import MappingProxyType

from tidings.channels.interface import Channel

log = logging.getLogger(__name__)

GROUP = "tidings.channels"
BUILT_IN = ("in_app", "email")
"""The channels Tidings delivers itself; no plugin may take their names."""


class PluginError(Exception):
    """An installed channel plugin cannot be used: it names its entry point."""


def discover() -> dict[str, Channel]:
    """A fresh instance of every installed channel plugin, by channel name.

    Raises:
        PluginError: an entry point does not load, is not a ``Channel``, takes a
            built-in name, or two plugins take the same name.
    """
    found: dict[str, Channel] = {}
    for entry in sorted(metadata.entry_points(group=GROUP), key=lambda e: e.name):
        try:
            loaded = entry.load()
        except Exception as exc:
            raise PluginError(f"channel plugin {entry.value!r} does not load: {exc}") from exc
        if not (isinstance(loaded, type) and issubclass(loaded, Channel)):
            raise PluginError(f"channel plugin {entry.value!r} is not a Channel subclass")
        channel = loaded()
        name = channel.name
        if name in BUILT_IN:
            raise PluginError(f"channel plugin {entry.value!r} takes the built-in name {name!r}")
        if name in found:
            raise PluginError(f"two channel plugins are named {name!r}")
        found[name] = channel
    return found


@functools.cache
def installed() -> Mapping[str, Channel]:
    """The installed channel plugins, discovered once per process (see ``discover``)."""
    return MappingProxyType(discover())


def names(channels: Mapping[str, Channel] | None = None) -> tuple[str, ...]:
    """Every channel name: the built-in ones, then the plugins' (installed by default)."""
    plugins = installed() if channels is None else channels
    return (*BUILT_IN, *sorted(plugins))
