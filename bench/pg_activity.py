"""What PostgreSQL is busy with: samples ``pg_stat_activity`` of one database.

A poor man's profiler for the database side of a benchmark: every ``interval`` seconds
it records, for each backend of the database that is not idle, its state, wait event
and the start of its query; the summary gives each (statement, state) its share of the
samples, i.e. roughly how many backends were busy with it on average.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import Counter

import asyncpg

from _common import PG_HOST, PG_PORT, PG_USER

_QUERY = """
SELECT state, coalesce(wait_event_type || ':' || wait_event, 'CPU') AS waiting, query
FROM pg_stat_activity
WHERE datname = $1 AND pid <> pg_backend_pid() AND state <> 'idle'
"""


def _shape(query: str) -> str:
    """The statement's kind and main table, e.g. 'INSERT INTO inbox_items'."""
    text = " ".join(query.split())
    text = re.sub(r"\$\d+", "?", text)
    for pattern in (
        r"^(INSERT INTO \w+)",
        r"^(UPDATE \w+ SET [\w, =]{0,40})",
        r"^(DELETE FROM \w+)",
        r"^(SELECT .{0,60}? FROM \w+)",
        r"^(BEGIN|COMMIT|ROLLBACK)",
    ):
        match = re.match(pattern, text, re.IGNORECASE)
        if match:
            return match.group(1)
    return text[:80]


class PgActivity:
    def __init__(self, db_name: str, interval: float = 0.02) -> None:
        self.db_name = db_name
        self.interval = interval
        self.samples = 0
        self.busy: Counter[tuple[str, str, str]] = Counter()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._conn = await asyncpg.connect(
            host=PG_HOST, port=PG_PORT, user=PG_USER, database="postgres"
        )
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            rows = await self._conn.fetch(_QUERY, self.db_name)
            self.samples += 1
            for row in rows:
                self.busy[(_shape(row["query"] or ""), row["state"], row["waiting"])] += 1
            await asyncio.sleep(self.interval)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._conn.close()

    def report(self, top: int = 15) -> str:
        if not self.samples:
            return "pg_stat_activity: no samples"
        total_busy = sum(self.busy.values()) / self.samples
        out = [
            f"pg_stat_activity: {self.samples} samples; on average {total_busy:.2f} backends "
            "of this database were not idle. Busy backends per statement (state, wait):"
        ]
        for (shape, state, waiting), n in self.busy.most_common(top):
            out.append(f"  {n / self.samples:5.2f}  {shape}  [{state}, {waiting}]")
        return "\n".join(out)
