"""The credentials commands: ``keys create``, ``keys list`` and ``keys revoke`` for
producers' API keys, and ``token`` for a user's inbox."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer

from tidings.auth import keys
from tidings.auth.service import AuthService
from tidings.cli._setup import ensure_schema, load_settings
from tidings.cli._terminal import err, fail, out, run
from tidings.kit import errors
from tidings.kit.clock import SystemClock
from tidings.kit.db import Database
from tidings.kit.settings import Settings

keys_app = typer.Typer(help="Producers' API keys.", no_args_is_help=True)
T = TypeVar("T")


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
    settings = load_settings()
    given = [*(types or []), *(scope or [])]
    scopes = [part.strip() for value in given for part in value.split(",") if part.strip()]

    async def create(service: AuthService) -> tuple[keys.ApiKey, str]:
        return await service.create_key(name, scopes)

    ensure_schema(settings)
    try:
        key, plaintext = run(lambda: _with_auth(settings, create))
    except errors.TidingsError as exc:
        raise fail(exc.message) from None
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
    settings = load_settings()
    ensure_schema(settings)
    found = run(lambda: _with_auth(settings, lambda service: service.list_keys()))
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
    settings = load_settings()
    try:
        run(lambda: _with_auth(settings, lambda service: service.revoke_key(key_id)))
    except errors.TidingsError as exc:
        raise fail(exc.message) from None
    out.print(f"revoked {key_id}", highlight=False)


def token(
    user: Annotated[str, typer.Argument(metavar="USER", help="The user id the token speaks for.")],
    ttl: Annotated[int, typer.Option(metavar="SECONDS", help="Lifetime in seconds.")] = 3600,
) -> None:
    """Print a user token for USER's inbox, alone on the last line."""
    from tidings.auth import tokens

    settings = load_settings()
    if not user:
        raise fail("a token needs a user id")
    print(
        tokens.issue_user_token(
            settings.signing_secret,
            user,
            ttl=dt.timedelta(seconds=ttl),
            now=dt.datetime.now(dt.UTC),
        )
    )


async def _with_auth(settings: Settings, use: Callable[[AuthService], Awaitable[T]]) -> T:
    """Run ``use`` with an AuthService on the configured database, then close it."""
    db = Database(settings.resolved_database_url, pool_size=1)
    try:
        return await use(
            AuthService(db, SystemClock(), settings.signing_secret, dt.timedelta(hours=1))
        )
    finally:
        await db.dispose()
