"""``tidings doctor``: the effective configuration, and a check of every dependency it
points at, each problem with what failed and what to do about it."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from pydantic import SecretStr

from tidings import catalog
from tidings.kit.db import Database
from tidings.kit.settings import GENERATE_SECRET, SECRET_MIN_LENGTH, Settings, secret_too_short

_TIMEOUT = 5.0
_SECRET_WORDS = ("secret", "password", "private_key")
_LOOPBACK = ("localhost", "127.0.0.1", "::1")
MASK = "****"


@dataclass(frozen=True)
class Check:
    """One dependency checked: ``ok``, what was found, and for a problem what to do."""

    name: str
    ok: bool
    message: str
    fix: str | None = None


def configuration(settings: Settings) -> list[tuple[str, str]]:
    """Every setting and its effective value, secrets masked, passwords cut from URLs."""
    shown: list[tuple[str, str]] = []
    for name, value in sorted(settings.model_dump().items()):
        if any(word in name for word in _SECRET_WORDS):
            text = "(not set)" if value is None else MASK
        elif isinstance(value, SecretStr):
            text = MASK
        elif isinstance(value, str) and "://" in value:
            text = ",".join(_hide_password(url) for url in value.split(","))
        else:
            text = "(not set)" if value is None else str(value)
        shown.append((name, text))
    shown.append(("(resolved) database", _hide_password(settings.resolved_database_url)))
    return shown


async def diagnose(settings: Settings) -> list[Check]:
    """Check each dependency the settings point at; none of them is changed."""
    checks = [
        _data_dir(settings.data_dir),
        _secret(settings),
        _public_url(settings),
        _catalog(settings.catalog),
    ]
    checks.extend(await _database(settings))
    if (
        settings.queue_backend == "jetstream"
        or settings.live_backend == "nats"
        or settings.ingest_enabled
    ):
        checks.append(await _nats(settings))
    if settings.counters_backend == "redis" or settings.live_backend == "redis":
        checks.append(await _redis(settings))
    checks.extend(await _email(settings))
    return checks


def _data_dir(folder: Path) -> Check:
    fix = f"create {folder} and make it writable, or set TIDINGS_DATA_DIR to a folder that is"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        return Check("data dir", False, f"{folder} is not writable: {exc}", fix)
    return Check("data dir", True, f"{folder.resolve()} is writable")


def _secret(settings: Settings) -> Check:
    """The signing secret is long enough: ``TIDINGS_SECRET`` is checked when the settings
    are read, the one generated into the data folder here (it can be edited by hand)."""
    if settings.secret:
        return Check("secret", True, f"TIDINGS_SECRET is set ({len(settings.secret)} characters)")
    if not settings.is_embedded:
        # Each process would generate its own into its own data folder: a user token or an
        # unsubscribe link signed by one would be refused by the next.
        return Check(
            "secret",
            False,
            "TIDINGS_SECRET is not set, and on PostgreSQL several processes must sign with "
            "one secret: a secret generated per process breaks tokens and links across them",
            f"set the same TIDINGS_SECRET (at least {SECRET_MIN_LENGTH} characters) in every "
            f"process; generate one with {GENERATE_SECRET}",
        )
    path = settings.data_dir / "secret.key"
    try:
        found = path.read_text().strip()
    except FileNotFoundError:
        return Check("secret", True, f"{path} will be generated on first start")
    except OSError as exc:
        return Check("secret", False, f"{path} cannot be read: {exc}", "make it readable")
    if len(found) < SECRET_MIN_LENGTH:
        return Check(
            "secret",
            False,
            secret_too_short(str(path), len(found)),
            f"delete {path} to have a new one generated, or set TIDINGS_SECRET",
        )
    return Check("secret", True, f"generated in {path} ({len(found)} characters)")


def _public_url(settings: Settings) -> Check:
    """Links in email, and the one-click unsubscribe of RFC 8058 that mail providers
    require, need an HTTPS address once real people get mail: anywhere but the embedded
    default on this machine."""
    url = settings.base_url
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "https":
        return Check("public url", True, f"{url}: links and one-click unsubscribe use HTTPS")
    if settings.is_embedded and parts.hostname in _LOOPBACK:
        return Check("public url", True, f"{url}: on this machine only (set an https:// one first)")
    found = f"is {url}" if settings.public_url else f"is not set (links go to {url})"
    return Check(
        "public url",
        False,
        f"TIDINGS_PUBLIC_URL {found}: links in email would not use HTTPS, which one-click "
        "unsubscribe (RFC 8058) needs",
        "set TIDINGS_PUBLIC_URL to the https:// address people reach Tidings at",
    )


def _catalog(folder: Path) -> Check:
    problems = catalog.check(folder)
    if problems:
        shown = "; ".join(str(p) for p in problems[:3])
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        return Check(
            "catalog",
            False,
            f"{len(problems)} error(s) in {folder}: {shown}{more}",
            "run 'tidings catalog check' and fix each error, or point TIDINGS_CATALOG at "
            "the catalog folder",
        )
    return Check("catalog", True, f"{folder}: {len(catalog.load(folder))} notification types")


async def _database(settings: Settings) -> list[Check]:
    url = settings.resolved_database_url
    shown = _hide_password(url)
    if settings.queue_backend == "jetstream" and settings.is_embedded:
        return [
            Check(
                "database",
                False,
                "the JetStream queue is chosen but the database is the embedded SQLite",
                "set TIDINGS_DATABASE_URL to a PostgreSQL database, or "
                "TIDINGS_QUEUE_BACKEND=database",
            )
        ]
    if settings.is_embedded:
        path = Path(sa.engine.make_url(url).database or "")
        if not await asyncio.to_thread(path.exists):
            # Every command that runs Tidings on the embedded default creates it.
            return [Check("database", True, f"{path} will be created on first start")]
    db = Database(url, pool_size=1)
    try:
        async with asyncio.timeout(_TIMEOUT):
            async with db.reader() as conn:
                await conn.execute(sa.text("SELECT 1"))
                revision = await _revision(conn)
    except Exception as exc:
        return [
            Check(
                "database",
                False,
                f"cannot reach {shown}: {_why(exc)}",
                "start the database server, or fix TIDINGS_DATABASE_URL (host, port, user, "
                "database name)",
            )
        ]
    finally:
        await db.dispose()
    head = _head_revision(url)
    reached = Check("database", True, f"{shown} answers")
    if revision != head:
        return [
            reached,
            Check(
                "schema",
                False,
                f"the schema is at revision {revision or '(none)'}, this version needs {head}",
                "run 'tidings db upgrade'",
            ),
        ]
    return [reached, Check("schema", True, f"at revision {head} (the latest)")]


async def _revision(conn: Any) -> str | None:
    try:
        found = await conn.execute(sa.text("SELECT version_num FROM alembic_version"))
    except sa.exc.DBAPIError:
        return None
    row = found.first()
    return None if row is None else str(row[0])


def _head_revision(url: str) -> str | None:
    from alembic.script import ScriptDirectory

    from tidings.kit import migrate

    return ScriptDirectory.from_config(migrate.alembic_config(url)).get_current_head()


async def _nats(settings: Settings) -> Check:
    import nats

    servers = settings.nats_servers
    shown = ",".join(_hide_password(s) for s in servers)
    fix = "start NATS with JetStream (nats-server -js), or fix TIDINGS_NATS_URL"
    try:
        async with asyncio.timeout(_TIMEOUT):
            nc = await nats.connect(
                servers=servers,
                connect_timeout=2,
                allow_reconnect=False,
                max_reconnect_attempts=0,
                name="tidings doctor",
            )
    except Exception as exc:
        return Check("nats", False, f"cannot reach {shown}: {_why(exc)}", fix)
    try:
        if settings.queue_backend != "jetstream":
            return Check("nats", True, f"{shown} answers (live updates)")
        try:
            async with asyncio.timeout(_TIMEOUT):
                info = await nc.jetstream().account_info()
        except Exception as exc:
            return Check("nats", False, f"{shown} answers but JetStream does not: {_why(exc)}", fix)
        return Check("nats", True, f"{shown} answers, JetStream on ({info.streams} streams)")
    finally:
        with contextlib.suppress(Exception):
            await nc.close()


async def _redis(settings: Settings) -> Check:
    from redis import asyncio as aioredis

    shown = _hide_password(settings.redis_url)
    client = aioredis.Redis.from_url(
        settings.redis_url, socket_connect_timeout=2, socket_timeout=_TIMEOUT
    )
    try:
        await client.ping()
    except Exception as exc:
        return Check(
            "redis",
            False,
            f"cannot reach {shown}: {_why(exc)}",
            "start Redis, or fix TIDINGS_REDIS_URL",
        )
    finally:
        await client.aclose()
    return Check("redis", True, f"{shown} answers")


async def _email(settings: Settings) -> list[Check]:
    from tidings.email.providers.factory import ProviderConfig

    try:
        config = ProviderConfig.model_validate(settings, from_attributes=True)
    except ValueError as exc:
        return [Check("email", False, f"the email settings are inconsistent: {exc}", None)]
    names = [config.email_provider]
    if config.email_failover_provider is not None:
        names.append(config.email_failover_provider)
    checks = []
    for name in names:
        label = "email" if name == config.email_provider else "email failover"
        if name == "catcher":
            checks.append(
                Check(
                    label,
                    True,
                    "the built-in mail catcher keeps mail in the database and sends none; "
                    "set TIDINGS_EMAIL_PROVIDER=smtp or ses to deliver",
                )
            )
        elif name == "ses":
            keys = "access keys given" if config.ses_access_key_id else "AWS default credentials"
            where = config.ses_endpoint_url or f"AWS {config.ses_region}"
            checks.append(Check(label, True, f"SES at {where}, {keys} (not contacted)"))
        else:
            checks.append(await _smtp(label, config))
    return checks


async def _smtp(label: str, config: Any) -> Check:
    import aiosmtplib

    port = config.smtp_port or {"none": 25, "starttls": 587, "tls": 465}[config.smtp_security]
    where = f"{config.smtp_host}:{port}"
    smtp = aiosmtplib.SMTP(
        hostname=config.smtp_host,
        port=port,
        timeout=min(config.smtp_timeout_seconds, _TIMEOUT),
        use_tls=config.smtp_security == "tls",
        start_tls=config.smtp_security == "starttls",
        validate_certs=config.smtp_validate_certs,
        cert_bundle=config.smtp_cert_bundle,
        local_hostname=config.smtp_local_hostname,
    )
    try:
        await smtp.connect()
        code, message = await smtp.ehlo()
    except Exception as exc:
        return Check(
            label,
            False,
            f"SMTP relay {where} ({config.smtp_security}) does not answer: {_why(exc)}",
            "check TIDINGS_SMTP_HOST, TIDINGS_SMTP_PORT and TIDINGS_SMTP_SECURITY, and that "
            "the relay accepts connections from this host",
        )
    finally:
        with contextlib.suppress(Exception):
            await smtp.quit()
    first = message.splitlines()[0] if message else ""
    return Check(label, True, f"SMTP relay {where} answers EHLO: {code} {first}".rstrip())


def _hide_password(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", f":{MASK}@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {_TIMEOUT:g}s"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
