"""What a command makes sure of before it works: its settings, the catalog, and the
database's schema."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from sqlalchemy.engine import url as sa_url

from tidings import catalog
from tidings.cli._terminal import err, fail, run
from tidings.kit import logs, migrate
from tidings.kit import settings as settings_module
from tidings.kit.settings import Settings


def load_settings() -> Settings:
    """Settings from the environment; a refused one ends the command with its line."""
    try:
        return Settings()
    except ValidationError as exc:
        raise fail(settings_module.describe(exc)) from None


def process_settings(updates: dict[str, Any], *, check: bool = True) -> Settings:
    """Settings from the environment with the command line's overrides, checked; with
    ``check``, logging set up and the catalog and schema made ready."""
    try:
        settings = Settings.model_validate({**load_settings().model_dump(), **updates})
    except ValidationError as exc:
        raise fail(settings_module.describe(exc)) from None
    if not check:
        return settings
    logs.configure(logs.wants_json(settings.log_format), level=settings.log_level)
    require_valid_catalog(settings)
    ensure_schema(settings)
    return settings


def require_valid_catalog(settings: Settings) -> None:
    """Stop the command, its errors printed, when the catalog has any."""
    problems = catalog.check(settings.catalog)
    if problems:
        for problem in problems:
            err.print(str(problem), highlight=False)
        raise fail(f"the catalog in {settings.catalog} has {len(problems)} error(s); not starting")


def ensure_schema(settings: Settings) -> None:
    """Make sure the schema is the one this version needs before anything uses it. The
    embedded SQLite file is brought up to date; PostgreSQL only when asked
    (``TIDINGS_MIGRATE_ON_START``, ``--migrate``): otherwise a schema behind stops the
    command with one line naming ``tidings db upgrade``, rather than a process that looks
    ready and fails on every job."""
    url = settings.resolved_database_url
    if settings.is_embedded:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        # Asked first, so that a start with nothing to do logs nothing about it.
        at = run(lambda: migrate.revision(url))
        if migrate.problem(at) is not None:
            if not migrate.upgradable(at):
                raise fail(str(migrate.problem(at)))
            migrate.upgrade(url)
        return
    try:
        found = run(lambda: migrate.revision(url))
    except Exception as exc:
        shown = sa_url.make_url(url).render_as_string(hide_password=True)
        reason = (str(exc).strip().splitlines() or [""])[0]
        raise fail(
            f"cannot reach the database at {shown} ({type(exc).__name__}: {reason}): "
            "start it, or fix TIDINGS_DATABASE_URL"
        ) from None
    problem = migrate.problem(found)
    if problem is None:
        return
    if not (settings.migrate_on_start and migrate.upgradable(found)):
        raise fail(problem)
    migrate.upgrade_exclusive(url)
    err.print(f"database migrated from {found or '(empty)'} to revision {migrate.head()}")
