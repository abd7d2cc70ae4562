"""Reloading the catalog of a running process, without a restart.

A reload reads the whole folder again and checks it exactly as ``tidings catalog check``
and a start do. Only a catalog without problems replaces the running one, in one step
(``Catalog.adopt``), so every service of the process sees the new types from its next
read; a catalog with problems is refused and the running one stays, with one log line
naming each file and problem. What triggers a reload (a file watch, SIGHUP, the admin
endpoint) is wired by the process; they all come here.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tidings.catalog import evolution
from tidings.catalog.loader import Catalog, load
from tidings.catalog.problems import CatalogInvalid, CatalogProblem

log = logging.getLogger(__name__)

SHOWN_PROBLEMS = 10
"""Problems named in the log line of a refused reload; the rest are counted."""


@dataclass(frozen=True)
class Reloaded:
    """What a reload changed: the types added and removed, and the changes that break
    producers of the previous catalog (applied all the same, as a restart would)."""

    types: int
    added: tuple[str, ...]
    removed: tuple[str, ...]
    breaking: tuple[str, ...]


class CatalogReloader:
    """Reloads ``live``, the catalog every service of the process holds, from its folder.

    ``switchable`` names the channels preferences switch for a catalog; they are fixed
    when the process starts, so a catalog that needs a channel they do not include is
    refused with the advice to restart.
    """

    def __init__(self, live: Catalog, switchable: Callable[[Catalog], Sequence[str]]) -> None:
        self._live = live
        self._switchable = switchable
        self._started_with = frozenset(switchable(live))
        # Reloads triggered together (a burst of file events, a signal) run one by one.
        self._lock = threading.Lock()
        self._running: set[asyncio.Task[None]] = set()

    @property
    def folder(self) -> Path:
        """The catalog folder that is reloaded."""
        return self._live.source_dir

    def reload(self) -> Reloaded:
        """Read and check the folder again and, when it has no problems, serve it.

        Raises:
            CatalogInvalid: the folder has problems; the running catalog is kept.
        """
        with self._lock:
            newer = load(self.folder)
            self._refuse_new_channels(newer)
            before = Catalog(self._live.types, self.folder, self._live.categories)
            self._live.adopt(newer)
        found = evolution.compare(before, newer)
        done = Reloaded(
            types=len(newer),
            added=tuple(sorted(set(newer.types) - set(before.types))),
            removed=tuple(sorted(set(before.types) - set(newer.types))),
            breaking=tuple(str(finding) for finding in found if not finding.caution),
        )
        log.info(
            "catalog reloaded from %s: %d types (added: %s; removed: %s)",
            self.folder,
            done.types,
            ", ".join(done.added) or "none",
            ", ".join(done.removed) or "none",
        )
        for line in done.breaking:
            log.warning("catalog reload breaks producers of the previous catalog: %s", line)
        return done

    async def reload_async(self) -> Reloaded:
        """``reload`` in a thread: compiling templates must not hold up the event loop.

        Raises:
            CatalogInvalid: as ``reload``.
        """
        return await asyncio.to_thread(self.reload)

    async def reload_and_log(self) -> None:
        """Reload for a signal or a file change: a refused catalog is logged, never raised."""
        try:
            await self.reload_async()
        except CatalogInvalid as exc:
            log.error("%s", refused(self.folder, exc.problems))
        except Exception:
            log.exception("reloading %s failed; the running catalog is kept", self.folder)

    def request(self) -> None:
        """Start a reload in the background (from a signal handler, in the event loop)."""
        task = asyncio.get_running_loop().create_task(self.reload_and_log())
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def watch(self, stop: asyncio.Event) -> None:
        """Reload whenever a file under the folder changes, until ``stop`` is set."""
        import watchfiles

        log.info("watching %s: catalog changes are loaded without a restart", self.folder)
        async for _changes in watchfiles.awatch(
            self.folder, stop_event=stop, watch_filter=watchfiles.DefaultFilter()
        ):
            await self.reload_and_log()

    def _refuse_new_channels(self, newer: Catalog) -> None:
        missing = sorted(set(self._switchable(newer)) - self._started_with)
        if missing:
            message = (
                f"channel(s) {', '.join(missing)} are new to this catalog: restart Tidings "
                "for preferences to switch them"
            )
            raise CatalogInvalid([CatalogProblem(str(self.folder), "channels", message)])


def refused(folder: Path, problems: Sequence[CatalogProblem]) -> str:
    """The one line that says a reload was refused and why, in ``catalog check``'s words."""
    shown = "; ".join(str(problem) for problem in problems[:SHOWN_PROBLEMS])
    more = len(problems) - SHOWN_PROBLEMS
    rest = f" (and {more} more: run 'tidings catalog check')" if more > 0 else ""
    return (
        f"the catalog in {folder} was not reloaded, the running one is kept: "
        f"{len(problems)} error(s): {shown}{rest}"
    )
