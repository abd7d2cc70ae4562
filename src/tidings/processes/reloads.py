"""Catalog reloads while a process runs: on SIGHUP, and when asked, whenever a file of
the catalog's folder changes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Callable

from tidings.catalog.reload import CatalogReloader

log = logging.getLogger("tidings.processes")


@contextlib.asynccontextmanager
async def catalog_reloads(
    reloader: CatalogReloader, *, watch: bool, also: Callable[[], None] | None = None
) -> AsyncIterator[None]:
    """Reload the catalog on SIGHUP while the block runs (and call ``also``, which passes
    it on to the processes this one started), and with ``watch`` whenever a file of its
    folder changes."""
    loop = asyncio.get_running_loop()

    def hangup() -> None:
        reloader.request()
        if also is not None:
            also()

    loop.add_signal_handler(signal.SIGHUP, hangup)
    stop = asyncio.Event()
    watching = (
        asyncio.create_task(_watch(reloader, stop), name="tidings-catalog-watch") if watch else None
    )
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
        stop.set()
        if watching is not None:
            await watching


async def _watch(reloader: CatalogReloader, stop: asyncio.Event) -> None:
    try:
        await reloader.watch(stop)
    except Exception:
        # The process serves on; SIGHUP and the admin endpoint still reload.
        log.warning("watching %s stopped; send SIGHUP to reload", reloader.folder, exc_info=True)
