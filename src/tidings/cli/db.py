"""The database commands: ``db upgrade``."""

from __future__ import annotations

from typing import Annotated

import typer

from tidings.cli._setup import load_settings
from tidings.cli._terminal import out
from tidings.kit import migrate

app = typer.Typer(help="The database schema.", no_args_is_help=True)


@app.command("upgrade")
def db_upgrade(
    revision: Annotated[
        str, typer.Argument(metavar="REVISION", help="The revision to reach: head, the latest.")
    ] = "head",
) -> None:
    """Bring the database's schema up to date (SQLite or PostgreSQL)."""
    settings = load_settings()
    if settings.is_embedded:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrate.upgrade(settings.resolved_database_url, revision)
    out.print(f"database at revision {revision}")
