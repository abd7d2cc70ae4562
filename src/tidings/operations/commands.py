"""The operators' commands: ``tidings dlq``, ``tidings retention`` and ``tidings doctor``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tidings.kit import errors, migrate
from tidings.kit.clock import SystemClock
from tidings.kit.db import Database
from tidings.kit.queue_sql import SqlQueue
from tidings.kit.settings import Settings, describe
from tidings.operations import doctor as checks
from tidings.operations.dead_letters import DeadLetters
from tidings.operations.retention import Policy, Retention

dlq_app = typer.Typer(
    help="Dead letters: jobs given up on after their retries.", no_args_is_help=True
)
retention_app = typer.Typer(
    help="Removing expired events, deliveries and inbox items.", no_args_is_help=True
)

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
T = TypeVar("T")


def _fail(message: str) -> typer.Exit:
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False)
    return typer.Exit(1)


async def _with_db(settings: Settings, use: Callable[[Database], Awaitable[T]]) -> T:
    db = Database(settings.resolved_database_url, pool_size=1)
    try:
        return await use(db)
    finally:
        await db.dispose()


def _dead_letters(settings: Settings, use: Callable[[DeadLetters], Awaitable[T]]) -> T:
    """Run ``use`` on the configured database's dead letters.

    A replayed job is written to the jobs table, which is the database queue itself, and
    with JetStream its outbox: a running relay publishes it from there.
    """
    if settings.is_embedded:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        migrate.upgrade(settings.resolved_database_url)

    async def run(db: Database) -> T:
        clock = SystemClock()
        return await use(DeadLetters(db, clock, SqlQueue(db, clock)))

    try:
        return asyncio.run(_with_db(settings, run))
    except errors.TidingsError as exc:
        raise _fail(exc.message) from None


@dlq_app.command("list")
def dlq_list(
    kind: Annotated[
        str | None, typer.Option(metavar="KIND", help="Only this job kind, e.g. email.")
    ] = None,
    limit: Annotated[int, typer.Option(metavar="N", help="At most this many.")] = 100,
) -> None:
    """List dead letters: id, kind, attempts, when and the last error."""

    async def listing(dead: DeadLetters) -> list[dict[str, Any]]:
        rows, _ = await dead.page(kind, None, limit)
        return rows

    rows = _dead_letters(Settings(), listing)
    table = Table("id", "kind", "attempts", "failed", "error")
    for row in rows:
        table.add_row(
            row["id"],
            row["kind"],
            str(row["attempts"]),
            row["failed_at"].isoformat(timespec="seconds"),
            row["error"].splitlines()[0][:100] if row["error"] else "",
        )
    out.print(table)
    err.print(f"{len(rows)} dead letter(s)")


@dlq_app.command("show")
def dlq_show(dead_letter_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Print one dead letter as JSON: payload, attempts, error."""
    row = _dead_letters(Settings(), lambda dead: dead.get(dead_letter_id))
    print(json.dumps(row, default=str, indent=2, sort_keys=True))


@dlq_app.command("replay")
def dlq_replay(
    dead_letter_id: Annotated[str | None, typer.Argument(metavar="ID")] = None,
    kind: Annotated[
        str | None, typer.Option(metavar="KIND", help="Replay every dead letter of this kind.")
    ] = None,
) -> None:
    """Enqueue a dead letter's job again (or every one of a kind); done work is not redone."""
    if (dead_letter_id is None) == (kind is None):
        raise _fail("give one dead letter ID, or --kind KIND")
    settings = Settings()
    if kind is not None:
        count = _dead_letters(settings, lambda dead: dead.replay_kind(kind))
        out.print(f"replayed {count} dead letter(s) of kind {kind}")
        return
    assert dead_letter_id is not None
    _dead_letters(settings, lambda dead: dead.replay(dead_letter_id))
    out.print(f"replayed {dead_letter_id}")


@dlq_app.command("discard")
def dlq_discard(dead_letter_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Forget a dead letter without running its job."""
    _dead_letters(Settings(), lambda dead: dead.discard(dead_letter_id))
    out.print(f"discarded {dead_letter_id}")


@retention_app.command("run")
def retention_run() -> None:
    """Run one retention pass now and print what it removed."""
    settings = Settings()
    if settings.is_embedded:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        migrate.upgrade(settings.resolved_database_url)

    async def once(db: Database) -> dict[str, int]:
        retention = Retention(
            db,
            SystemClock(),
            Policy.from_settings(settings),
            interval=settings.retention_interval_seconds,
        )
        return (await retention.run_once()).as_dict()

    removed = asyncio.run(_with_db(settings, once))
    for table, count in removed.items():
        out.print(f"{table}: {count}", highlight=False)


def doctor() -> None:
    """Print the effective configuration and check every dependency it points at."""
    try:
        settings = Settings()
    except ValidationError as exc:
        raise _fail(f"the settings are invalid: {describe(exc)}") from None
    out.print("[bold]Configuration[/bold] (TIDINGS_* environment variables)")
    for name, value in checks.configuration(settings):
        out.print(f"  {name} = {escape(value)}", highlight=False)
    out.print("[bold]Checks[/bold]")
    found = asyncio.run(checks.diagnose(settings))
    for check in found:
        mark = "[green]ok[/green]  " if check.ok else "[red]FAIL[/red]"
        out.print(f"  {mark} {check.name}: {escape(check.message)}", highlight=False)
        if check.fix:
            out.print(f"         to fix: {escape(check.fix)}", highlight=False)
    failed = [c.name for c in found if not c.ok]
    if failed:
        raise _fail(f"{len(failed)} check(s) failed: {', '.join(failed)}")
    out.print("all checks passed")
