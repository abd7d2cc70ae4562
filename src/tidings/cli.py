"""The ``tidings`` command."""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from sqlalchemy.engine import url as sa_url

from tidings import catalog
from tidings.auth import keys
from tidings.auth.service import AuthService
from tidings.catalog import evolution
from tidings.channels.registry import PluginError
from tidings.kit import errors, logs, loops, migrate
from tidings.kit import settings as settings_module
from tidings.kit.clock import SystemClock
from tidings.kit.db import Database
from tidings.kit.settings import Settings
from tidings.operations import commands

# Help is plain text (no boxes, no type labels such as <bool>): it is read in narrow
# terminals, in logs, and pasted into tickets. Sub-apps inherit the mode.
app = typer.Typer(
    help="Tidings: events in; in-app inbox and email out.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
keys_app = typer.Typer(help="Producers' API keys.", no_args_is_help=True)
db_app = typer.Typer(help="The database schema.", no_args_is_help=True)
catalog_app = typer.Typer(help="Notification types.", no_args_is_help=True)
email_app = typer.Typer(help="The email channel.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(db_app, name="db")
app.add_typer(catalog_app, name="catalog")
app.add_typer(email_app, name="email")
app.add_typer(commands.dlq_app, name="dlq")
app.add_typer(commands.retention_app, name="retention")
app.command()(commands.doctor)

HOST_HELP = "Address to listen on (default TIDINGS_HOST or 127.0.0.1)."
PORT_HELP = "Port (default TIDINGS_PORT or 8000)."
Host = Annotated[str | None, typer.Option(metavar="ADDRESS", help=HOST_HELP)]
Port = Annotated[int | None, typer.Option(metavar="PORT", help=PORT_HELP)]
MigrateNow = Annotated[
    bool,
    typer.Option(
        "--migrate",
        help="Bring a PostgreSQL schema up to date first (as TIDINGS_MIGRATE_ON_START).",
    ),
]
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
T = TypeVar("T")


def _run(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    # The same event loop as the API's (uvloop where installed): the worker spends a
    # quarter of its time in it.
    return loops.run(make())


def _fail(message: str) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(1)


@app.command()
def serve(
    host: Host = None,
    port: Port = None,
    migrate_now: MigrateNow = False,
    workers: Annotated[
        str | None,
        typer.Option(
            metavar="N",
            help="PostgreSQL: plan and deliver in N worker processes beside the API "
            "process, or auto (one per core but one); 0 runs everything in one process "
            "(default TIDINGS_SERVE_WORKERS or 0).",
        ),
    ] = None,
) -> None:
    """Run API, workers and timers in one process (the embedded default needs no servers);
    on PostgreSQL, --workers runs the workers in processes of their own."""

    from tidings.app import create_app

    updates: dict[str, Any] = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    if migrate_now:
        updates["migrate_on_start"] = True
    if workers is not None:
        updates["serve_workers"] = workers
    settings = _process_settings(updates, check=False)
    count = _serve_workers(settings)
    if count:
        settings = settings.model_copy(update={"worker_enabled": False})
        if settings.live_backend == "local":
            # The workers write the items, the API holds the streams: PostgreSQL itself
            # carries the live updates between them (LISTEN/NOTIFY), as the workers,
            # started with this environment, will know.
            os.environ["TIDINGS_LIVE_BACKEND"] = "postgres"
            settings = settings.model_copy(update={"live_backend": "postgres"})
    logs.configure(logs.wants_json(settings.log_format), level=settings.log_level)
    _require_valid_catalog(settings)
    if settings.is_embedded or not settings.secret:
        _require_writable_data_dir(settings)
    _ensure_schema(settings)
    listening, settings = _claim_port(settings)
    application = create_app(settings)
    where = "embedded SQLite in " + str(settings.data_dir) if settings.is_embedded else "PostgreSQL"
    out.print(f"Tidings {application.version} on {where}, catalog {settings.catalog}")
    if count:
        out.print(f"Workers: {count} processes beside this one (API)")
    if settings.demo_enabled:
        out.print(f"Demo: {settings.base_url}/demo  (example users, events and mailbox)")
    _listen(application, settings, listening, watch_catalog=True, workers=count)


def _serve_workers(settings: Settings) -> int:
    """The worker processes ``serve`` starts beside its API; a setting that cannot work
    here stops the command with one line saying why and what to set."""
    count = settings.serve_worker_count
    if not count:
        return 0
    if settings.is_embedded:
        raise _fail(
            "--workers needs PostgreSQL: the embedded SQLite file has one writer, so serve "
            "plans and delivers in its own process there; set TIDINGS_DATABASE_URL, or "
            "leave --workers out (TIDINGS_SERVE_WORKERS=0)"
        )
    if sys.platform == "win32":
        raise _fail("--workers runs on Linux and macOS; leave it out on Windows")
    return count


def _require_writable_data_dir(settings: Settings) -> None:
    """Stop with one line, not a traceback, when the data folder (the embedded database,
    the generated secret and DKIM key) cannot be written."""
    import tempfile

    folder = settings.data_dir.absolute()
    try:
        if folder.exists() and not folder.is_dir():
            raise NotADirectoryError(0, "a file is where the folder should be")
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder, prefix=".tidings-write-check-"):
            pass
        database = folder / "tidings.db"
        if settings.is_embedded and database.exists():
            with database.open("ab"):
                pass
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        raise _fail(
            f"cannot write to {folder} ({reason}): set TIDINGS_DATA_DIR to a folder Tidings "
            "may write to, use PostgreSQL (TIDINGS_DATABASE_URL) with TIDINGS_SECRET, "
            "or fix the permissions"
        ) from None


def _claim_port(settings: Settings) -> tuple[socket.socket, Settings]:
    """The HTTP port, listening, and the settings with its number (``--port 0`` takes a
    free one); a port that is taken stops the command with one line naming the setting."""
    from tidings.processes import PortInUse, listen

    try:
        listening = listen(settings)
    except PortInUse as exc:
        raise _fail(str(exc.strerror)) from None
    except OSError as exc:
        raise _fail(
            f"{exc.strerror or exc}: set TIDINGS_HOST (or --host) to an address of this machine"
        ) from None
    port = int(listening.getsockname()[1])
    return listening, settings.model_copy(update={"port": port})


def _listen(
    application: Any,
    settings: Settings,
    listening: socket.socket,
    *,
    watch_catalog: bool = False,
    workers: int = 0,
) -> None:
    """Serve ``application`` over HTTP on ``listening`` until stopped, saying where."""
    from tidings.processes import serve_http

    out.print(f"Listening on {settings.base_url}  (API docs: {settings.base_url}/docs)")
    code = serve_http(
        application, settings, listening, watch_catalog=watch_catalog, workers=workers
    )
    if code:
        raise typer.Exit(code)


@app.command()
def api(
    host: Host = None,
    port: Port = None,
    migrate_now: MigrateNow = False,
) -> None:
    """Run only the HTTP API (scale-out: as many as needed, behind a load balancer)."""

    from tidings.app import create_app

    updates: dict[str, Any] = {"worker_enabled": False}
    updates.update({k: v for k, v in (("host", host), ("port", port)) if v is not None})
    if migrate_now:
        updates["migrate_on_start"] = True
    settings = _process_settings(updates)
    listening, settings = _claim_port(settings)
    application = create_app(settings)
    out.print(f"Tidings API {application.version}, queue {settings.queue_backend}")
    _listen(application, settings, listening)


@app.command()
def worker(
    stage: Annotated[
        list[str] | None,
        typer.Option(
            metavar="STAGE", help="Stage to run: plan, deliver (repeat for both; default both)."
        ),
    ] = None,
    lanes: Annotated[
        str | None,
        typer.Option(metavar="LANES", help="Priority lanes to serve, e.g. 0,1 (default all)."),
    ] = None,
    health_port: Annotated[
        int | None,
        typer.Option(metavar="PORT", help="Port for /healthz and /readyz (default 8001)."),
    ] = None,
    migrate_now: MigrateNow = False,
    watch_catalog: Annotated[
        bool,
        typer.Option(
            "--watch-catalog", help="Reload the catalog whenever a file of its folder changes."
        ),
    ] = False,
    health_fd: Annotated[int | None, typer.Option(hidden=True)] = None,
    lifeline_fd: Annotated[int | None, typer.Option(hidden=True)] = None,
) -> None:
    """Run only the pipeline's worker: lease jobs and plan and deliver them."""
    # --health-fd and --lifeline-fd are how `serve --workers` hands a worker its health
    # port, already listening, and the pipe that closes when serve is gone.
    from tidings.processes import run_worker

    updates: dict[str, Any] = {"migrate_on_start": True} if migrate_now else {}
    if stage:
        updates["worker_stages"] = ",".join(stage)
    if lanes is not None:
        updates["worker_lanes"] = lanes
    if health_port is not None:
        updates["health_port"] = health_port
    settings = _process_settings(updates)
    health = None if health_fd is None else socket.socket(fileno=health_fd)
    try:
        _run(
            lambda: run_worker(
                settings, health=health, lifeline=lifeline_fd, watch_catalog=watch_catalog
            )
        )
    except OSError as exc:
        raise _fail(f"{exc.strerror or exc}: choose another with --health-port") from None


@app.command()
def scheduler(
    health_port: Annotated[
        int | None,
        typer.Option(metavar="PORT", help="Port for /healthz and /readyz (default 8002)."),
    ] = None,
    migrate_now: MigrateNow = False,
) -> None:
    """Run the timer relay of the JetStream queue (several may run; each timer fires once)."""
    from tidings.processes import run_scheduler

    updates: dict[str, Any] = {} if health_port is None else {"health_port": health_port}
    if migrate_now:
        updates["migrate_on_start"] = True
    settings = _process_settings(updates)
    try:
        _run(lambda: run_scheduler(settings))
    except ValueError as exc:
        raise _fail(str(exc)) from None
    except OSError as exc:
        raise _fail(f"{exc.strerror or exc}: choose another with --health-port") from None


def _settings() -> Settings:
    """Settings from the environment; a refused one ends the command with its line."""
    try:
        return Settings()
    except ValidationError as exc:
        raise _fail(settings_module.describe(exc)) from None


def _process_settings(updates: dict[str, Any], *, check: bool = True) -> Settings:
    """Settings from the environment with the command line's overrides, checked; with
    ``check``, logging set up and the catalog and schema made ready."""
    try:
        settings = Settings.model_validate({**_settings().model_dump(), **updates})
    except ValidationError as exc:
        raise _fail(settings_module.describe(exc)) from None
    if not check:
        return settings
    logs.configure(logs.wants_json(settings.log_format), level=settings.log_level)
    _require_valid_catalog(settings)
    _ensure_schema(settings)
    return settings


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[
        str, typer.Argument(metavar="REVISION", help="The revision to reach: head, the latest.")
    ] = "head",
) -> None:
    """Bring the database's schema up to date (SQLite or PostgreSQL)."""
    settings = _settings()
    if settings.is_embedded:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrate.upgrade(settings.resolved_database_url, revision)
    out.print(f"database at revision {revision}")


@catalog_app.command("check")
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
    folder = directory or _settings().catalog
    problems = catalog.check(folder)
    for problem in problems:
        out.print(str(problem), highlight=False)
    if problems:
        raise _fail(f"{len(problems)} error(s) in {folder}")
    types = catalog.load(folder)
    if against is not None:
        if catalog.check(against):
            raise _fail(f"{against} is not a valid catalog itself; check it first")
        found = evolution.compare(catalog.load(against), types)
        for finding in found:
            out.print(str(finding), highlight=False)
        breaks = [finding for finding in found if not finding.caution]
        if breaks:
            raise _fail(f"{len(breaks)} breaking change(s) from {against} to {folder}")
        out.print(f"{folder}: compatible with {against}")
    out.print(f"{folder}: {len(types)} notification types, no errors")


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(metavar="NAME", help="Who the key is for, e.g. a team.")],
    types: Annotated[
        list[str] | None,
        typer.Option(
            "--types",
            metavar="PATTERNS",
            help="Notification types it may publish and read, as patterns: 'comment.*'.",
        ),
    ] = None,
    scope: Annotated[
        list[str] | None,
        typer.Option(
            "--scope",
            metavar="SCOPES",
            help="What else it may do: users:read, users:write, users:erase, topics:read, "
            "topics:write, preferences:read, preferences:write, dev:mailbox; admin for an "
            "operator (implies all). Repeat it or separate with commas.",
        ),
    ] = None,
) -> None:
    """Create an API key with only the scopes given; the key itself is printed alone on
    the last line, once."""
    settings = _settings()
    given = [*(types or []), *(scope or [])]
    scopes = [part.strip() for value in given for part in value.split(",") if part.strip()]

    async def create(service: AuthService) -> tuple[keys.ApiKey, str]:
        return await service.create_key(name, scopes)

    _ensure_schema(settings)
    try:
        key, plaintext = _run(lambda: _with_auth(settings, create))
    except errors.TidingsError as exc:
        raise _fail(exc.message) from None
    err.print(
        f"created key {key.id} for {name!r}; types: {', '.join(key.type_patterns) or 'none'}; "
        f"scopes: {', '.join(_granted(key)) or 'none'}"
    )
    print(plaintext)


def _granted(key: keys.ApiKey) -> list[str]:
    """A key's capability scopes as given (``admin`` stays one word)."""
    return [s for s in key.scopes if keys.is_capability(s)]


@keys_app.command("list")
def keys_list(
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print a JSON array (id, name, prefix, types, scopes, created_at, "
            "revoked_at) for scripts.",
        ),
    ] = False,
) -> None:
    """List API keys (never their secrets): id, name, prefix, type patterns, scopes, when
    created, and whether revoked. The id is what keys revoke takes."""
    settings = _settings()
    _ensure_schema(settings)
    found = _run(lambda: _with_auth(settings, lambda service: service.list_keys()))
    if as_json:
        print(json.dumps([_key_record(key) for key in found], indent=2))
        return
    # Plain columns, never cut nor wrapped to the terminal's width (a table would shorten
    # the id); one key a line, the id first, so that it can be copied or cut out whole.
    rows = [("id", "name", "prefix", "types", "scopes", "created", "status")]
    rows += [
        (
            key.id,
            key.name,
            key.prefix,
            ",".join(key.type_patterns) or "-",
            ",".join(_granted(key)) or "-",
            key.created_at.isoformat(timespec="seconds"),
            "revoked" if key.revoked_at else "active",
        )
        for key in found
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def _key_record(key: keys.ApiKey) -> dict[str, Any]:
    """A key as ``keys list --json`` prints it."""
    return {
        "id": key.id,
        "name": key.name,
        "prefix": key.prefix,
        "types": list(key.type_patterns),
        "scopes": _granted(key),
        "created_at": key.created_at.isoformat(),
        "revoked_at": key.revoked_at.isoformat() if key.revoked_at else None,
    }


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[
        str, typer.Argument(metavar="KEY_ID", help="The key's id, as tidings keys list shows it.")
    ],
) -> None:
    """Revoke an API key: every process refuses it from its next request."""
    settings = _settings()
    try:
        _run(lambda: _with_auth(settings, lambda service: service.revoke_key(key_id)))
    except errors.TidingsError as exc:
        raise _fail(exc.message) from None
    out.print(f"revoked {key_id}", highlight=False)


@email_app.command("dns")
def email_dns() -> None:
    """Print the DNS TXT record that publishes this deployment's DKIM key."""
    from tidings.email import dkim

    settings = _settings()
    name = f"{settings.dkim_selector}._domainkey.{settings.sender_domain}"
    out.print(f"{name}. IN TXT", highlight=False)
    print(dkim.dns_record(settings.dkim_key_pem))


@email_app.command("webhook-secret")
def email_webhook_secret() -> None:
    """Print the secret that signs generic email feedback webhooks, alone on the last line."""
    print(_settings().webhook_secret)


@app.command()
def token(
    user: Annotated[str, typer.Argument(metavar="USER", help="The user id the token speaks for.")],
    ttl: Annotated[int, typer.Option(metavar="SECONDS", help="Lifetime in seconds.")] = 3600,
) -> None:
    """Print a user token for USER's inbox, alone on the last line."""
    from tidings.auth import tokens

    settings = _settings()
    if not user:
        raise _fail("a token needs a user id")
    print(
        tokens.issue_user_token(
            settings.signing_secret,
            user,
            ttl=dt.timedelta(seconds=ttl),
            now=dt.datetime.now(dt.UTC),
        )
    )


def _require_valid_catalog(settings: Settings) -> None:
    problems = catalog.check(settings.catalog)
    if problems:
        for problem in problems:
            err.print(str(problem), highlight=False)
        raise _fail(f"the catalog in {settings.catalog} has {len(problems)} error(s); not starting")


async def _with_auth(settings: Settings, use: Callable[[AuthService], Awaitable[T]]) -> T:
    """Run ``use`` with an AuthService on the configured database, then close it."""
    db = Database(settings.resolved_database_url, pool_size=1)
    try:
        return await use(
            AuthService(db, SystemClock(), settings.signing_secret, dt.timedelta(hours=1))
        )
    finally:
        await db.dispose()


def _ensure_schema(settings: Settings) -> None:
    """Make sure the schema is the one this version needs before anything uses it. The
    embedded SQLite file is brought up to date; PostgreSQL only when asked
    (``TIDINGS_MIGRATE_ON_START``, ``--migrate``): otherwise a schema behind stops the
    command with one line naming ``tidings db upgrade``, rather than a process that looks
    ready and fails on every job."""
    url = settings.resolved_database_url
    if settings.is_embedded:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        # Asked first, so that a start with nothing to do logs nothing about it.
        at = _run(lambda: migrate.revision(url))
        if migrate.problem(at) is not None:
            if not migrate.upgradable(at):
                raise _fail(str(migrate.problem(at)))
            migrate.upgrade(url)
        return
    try:
        found = _run(lambda: migrate.revision(url))
    except Exception as exc:
        shown = sa_url.make_url(url).render_as_string(hide_password=True)
        reason = (str(exc).strip().splitlines() or [""])[0]
        raise _fail(
            f"cannot reach the database at {shown} ({type(exc).__name__}: {reason}): "
            "start it, or fix TIDINGS_DATABASE_URL"
        ) from None
    problem = migrate.problem(found)
    if problem is None:
        return
    if not (settings.migrate_on_start and migrate.upgradable(found)):
        raise _fail(problem)
    migrate.upgrade_exclusive(url)
    err.print(f"database migrated from {found or '(empty)'} to revision {migrate.head()}")


def main() -> None:
    try:
        app()
    except PluginError as exc:
        # Found by whichever command first looks at the channels: one line, not a trace.
        err.print(f"[red]error:[/red] {exc}; fix the plugin or uninstall it", highlight=False)
        raise SystemExit(1) from None
