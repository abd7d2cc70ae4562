"""The ``tidings`` command: the root of its commands, and ``main``, its entry point.

Each group of commands is a module of its own: ``processes`` (``serve``, ``api``,
``worker``, ``scheduler``), ``credentials`` (``keys …``, ``token``), ``db``, ``catalog``
and ``email``; ``doctor``, ``dlq`` and ``retention`` come from ``operations.commands``.
"""

from __future__ import annotations

import typer

from tidings.channels.registry import PluginError
from tidings.cli import catalog, credentials, db, email, processes
from tidings.cli._terminal import err
from tidings.operations import commands

# Help is plain text (no boxes, no type labels such as <bool>): it is read in narrow
# terminals, in logs, and pasted into tickets. Sub-apps inherit the mode.
app = typer.Typer(
    help="Tidings: events in; in-app inbox and email out.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(credentials.keys_app, name="keys")
app.add_typer(db.app, name="db")
app.add_typer(catalog.app, name="catalog")
app.add_typer(email.app, name="email")
app.add_typer(commands.dlq_app, name="dlq")
app.add_typer(commands.retention_app, name="retention")
app.command()(commands.doctor)
app.command()(processes.serve)
app.command()(processes.api)
app.command()(processes.worker)
app.command()(processes.scheduler)
app.command()(credentials.token)


def main() -> None:
    """Run the ``tidings`` command."""
    try:
        app()
    except PluginError as exc:
        # Found by whichever command first looks at the channels: one line, not a trace.
        err.print(f"[red]error:[/red] {exc}; fix the plugin or uninstall it", highlight=False)
        raise SystemExit(1) from None
