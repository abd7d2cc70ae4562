"""The counters' in-memory twin, for tests: the same contract, nothing shared."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence

from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.kit.counters import Hit, Mark, NewHit, NewMark, mark_value, member


class InMemoryCounters:
    """The counters' twin for unit tests: Redis's behaviour, owners kept, in a dict.

    Writes ignore the connection, so they are not transactional.
    """

    def __init__(self) -> None:
        self.marks: dict[str, NewMark] = {}
        self.hits: dict[str, dict[str, Hit]] = {}

    async def live_marks(
        self, conn: AsyncConnection | None, keys: Collection[str], now: dt.datetime
    ) -> dict[str, Mark]:
        found = {key: self.marks[key] for key in set(keys) if key in self.marks}
        return {
            key: Mark(mark.first_seen, mark.owner)
            for key, mark in found.items()
            if mark.expires_at > now
        }

    async def save_marks(
        self, conn: AsyncConnection | None, marks: Sequence[NewMark], *, now: dt.datetime
    ) -> None:
        if not marks:
            return
        self.marks = {key: mark for key, mark in self.marks.items() if mark.expires_at > now}
        self.marks.update((mark.key, mark) for mark in marks)

    async def recent_hits(
        self, conn: AsyncConnection | None, scopes: Collection[str], since: dt.datetime
    ) -> dict[str, list[Hit]]:
        return {
            scope: sorted(
                (hit for hit in self.hits.get(scope, {}).values() if hit.at > since),
                key=lambda hit: hit.at,
            )
            for scope in set(scopes)
        }

    async def save_hits(
        self,
        conn: AsyncConnection | None,
        hits: Sequence[NewHit],
        *,
        forget_before: dt.datetime,
    ) -> None:
        for hit in hits:
            self.hits.setdefault(hit.scope, {})[member(hit)] = Hit(hit.at, hit.owner)
        for scope in {hit.scope for hit in hits}:
            kept = {m: h for m, h in self.hits[scope].items() if h.at >= forget_before}
            if kept:
                self.hits[scope] = kept
            else:
                del self.hits[scope]

    async def forget(self, marks: Sequence[NewMark], hits: Sequence[NewHit]) -> None:
        for mark in marks:
            found = self.marks.get(mark.key)
            if found is not None and mark_value(found) == mark_value(mark):
                del self.marks[mark.key]
        for hit in hits:
            if hit.owner is not None:
                self.hits.get(hit.scope, {}).pop(member(hit), None)

    async def checks(self) -> dict[str, str]:
        return {}

    async def close(self) -> None:
        """Nothing to close."""
