"""Starting the plugin channels of one Tidings process: settings, address books, routes."""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Mapping

from fastapi import APIRouter

from tidings import catalog
from tidings.channels import registry
from tidings.channels.addresses import SqlAddressBook
from tidings.channels.interface import Channel, ChannelServices, ChannelUnavailable
from tidings.kit.clock import Clock
from tidings.kit.db import Database
from tidings.kit.settings import Settings

log = logging.getLogger(__name__)


def configure(
    settings: Settings, db: Database, clock: Clock, used: Collection[str] = ()
) -> dict[str, Channel]:
    """A fresh instance of every installed plugin channel, configured for this process;
    a channel that cannot run here is left out, saying why: a warning when a type of the
    catalog (``used``) delivers on it, a note otherwise."""
    running: dict[str, Channel] = {}
    for name, channel in registry.discover().items():
        services = ChannelServices(
            settings=settings.channel_settings_of(name),
            addresses=SqlAddressBook(db, clock, name),
            base_url=settings.base_url,
        )
        try:
            channel.configure(services)
        except ChannelUnavailable as exc:
            report = log.warning if name in used else log.info
            report("the %s channel is off: %s", name, exc)
            continue
        running[name] = channel
    return running


def switchable(types: catalog.Catalog) -> tuple[str, ...]:
    """The channels preferences switch: the built-in ones, and the plugin channels that
    some type of the catalog uses (installed here or not)."""
    used = {channel for ntype in types for channel in ntype.channels}
    for category in types.categories.values():
        used.update(category.default_channels)
    return (*registry.BUILT_IN, *sorted(used - set(registry.BUILT_IN)))


def routers(channels: Mapping[str, Channel]) -> Iterable[APIRouter]:
    """The end-user routers of the running plugin channels."""
    for channel in channels.values():
        router = channel.router()
        if router is not None:
            yield router


async def close(channels: Mapping[str, Channel]) -> None:
    """Close every running plugin channel; one failing does not keep the others open."""
    for name, channel in channels.items():
        try:
            await channel.close()
        except Exception:
            log.warning("closing the %s channel failed", name, exc_info=True)
