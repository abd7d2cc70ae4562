"""The commands that run Tidings: ``serve``, ``api``, ``worker`` and ``scheduler``."""

from __future__ import annotations

import os
import socket
import sys
from typing import Annotated, Any

import typer

from tidings.cli._setup import ensure_schema, process_settings, require_valid_catalog
from tidings.cli._terminal import fail, out, run
from tidings.kit import logs
from tidings.kit.settings import Settings

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

    from tidings.app.asgi import create_app

    updates: dict[str, Any] = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    if migrate_now:
        updates["migrate_on_start"] = True
    if workers is not None:
        updates["serve_workers"] = workers
    settings = process_settings(updates, check=False)
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
    require_valid_catalog(settings)
    if settings.is_embedded or not settings.secret:
        _require_writable_data_dir(settings)
    ensure_schema(settings)
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
        raise fail(
            "--workers needs PostgreSQL: the embedded SQLite file has one writer, so serve "
            "plans and delivers in its own process there; set TIDINGS_DATABASE_URL, or "
            "leave --workers out (TIDINGS_SERVE_WORKERS=0)"
        )
    if sys.platform == "win32":
        raise fail("--workers runs on Linux and macOS; leave it out on Windows")
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
        raise fail(
            f"cannot write to {folder} ({reason}): set TIDINGS_DATA_DIR to a folder Tidings "
            "may write to, use PostgreSQL (TIDINGS_DATABASE_URL) with TIDINGS_SECRET, "
            "or fix the permissions"
        ) from None


def _claim_port(settings: Settings) -> tuple[socket.socket, Settings]:
    """The HTTP port, listening, and the settings with its number (``--port 0`` takes a
    free one); a port that is taken stops the command with one line naming the setting."""
    from tidings.processes.ports import PortInUse, listen

    try:
        listening = listen(settings)
    except PortInUse as exc:
        raise fail(str(exc.strerror)) from None
    except OSError as exc:
        raise fail(
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
    from tidings.processes.http import serve_http

    out.print(f"Listening on {settings.base_url}  (API docs: {settings.base_url}/docs)")
    code = serve_http(
        application, settings, listening, watch_catalog=watch_catalog, workers=workers
    )
    if code:
        raise typer.Exit(code)


def api(
    host: Host = None,
    port: Port = None,
    migrate_now: MigrateNow = False,
) -> None:
    """Run only the HTTP API (scale-out: as many as needed, behind a load balancer)."""

    from tidings.app.asgi import create_app

    updates: dict[str, Any] = {"worker_enabled": False}
    updates.update({k: v for k, v in (("host", host), ("port", port)) if v is not None})
    if migrate_now:
        updates["migrate_on_start"] = True
    settings = process_settings(updates)
    listening, settings = _claim_port(settings)
    application = create_app(settings)
    out.print(f"Tidings API {application.version}, queue {settings.queue_backend}")
    _listen(application, settings, listening)


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
    from tidings.processes.scale_out import run_worker

    updates: dict[str, Any] = {"migrate_on_start": True} if migrate_now else {}
    if stage:
        updates["worker_stages"] = ",".join(stage)
    if lanes is not None:
        updates["worker_lanes"] = lanes
    if health_port is not None:
        updates["health_port"] = health_port
    settings = process_settings(updates)
    health = None if health_fd is None else socket.socket(fileno=health_fd)
    try:
        run(
            lambda: run_worker(
                settings, health=health, lifeline=lifeline_fd, watch_catalog=watch_catalog
            )
        )
    except OSError as exc:
        raise fail(f"{exc.strerror or exc}: choose another with --health-port") from None


def scheduler(
    health_port: Annotated[
        int | None,
        typer.Option(metavar="PORT", help="Port for /healthz and /readyz (default 8002)."),
    ] = None,
    migrate_now: MigrateNow = False,
) -> None:
    """Run the timer relay of the JetStream queue (several may run; each timer fires once)."""
    from tidings.processes.scale_out import run_scheduler

    updates: dict[str, Any] = {} if health_port is None else {"health_port": health_port}
    if migrate_now:
        updates["migrate_on_start"] = True
    settings = process_settings(updates)
    try:
        run(lambda: run_scheduler(settings))
    except ValueError as exc:
        raise fail(str(exc)) from None
    except OSError as exc:
        raise fail(f"{exc.strerror or exc}: choose another with --health-port") from None
