"""The catalog commands: ``catalog check``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tidings import catalog
from tidings.catalog import evolution
from tidings.cli._setup import load_settings
from tidings.cli._terminal import fail, out

app = typer.Typer(help="Notification types.", no_args_is_help=True)


@app.command("check")
def catalog_check(
    directory: Annotated[
        Path | None,
        typer.Argument(metavar="FOLDER", help="Catalog folder (default TIDINGS_CATALOG)."),
    ] = None,
    against: Annotated[
        Path | None,
        typer.Option(
            metavar="FOLDER",
            help="The catalog in production: refuse changes that break its producers.",
        ),
    ] = None,
) -> None:
    """Validate every notification type: schema, templates, unknown fields; with
    --against, also that producers of the older catalog keep working."""
    folder = directory or load_settings().catalog
    problems = catalog.check(folder)
    for problem in problems:
        out.print(str(problem), highlight=False)
    if problems:
        raise fail(f"{len(problems)} error(s) in {folder}")
    types = catalog.load(folder)
    if against is not None:
        if catalog.check(against):
            raise fail(f"{against} is not a valid catalog itself; check it first")
        found = evolution.compare(catalog.load(against), types)
        for finding in found:
            out.print(str(finding), highlight=False)
        breaks = [finding for finding in found if not finding.caution]
        if breaks:
            raise fail(f"{len(breaks)} breaking change(s) from {against} to {folder}")
        out.print(f"{folder}: compatible with {against}")
    out.print(f"{folder}: {len(types)} notification types, no errors")
