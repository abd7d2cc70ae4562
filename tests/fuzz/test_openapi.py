"""Schemathesis fuzzes every operation of the served OpenAPI document.

Two runs over the same document, on SQLite and on PostgreSQL: one with credentials that
may do everything (an API key with every type and the ``admin`` scope, a user token for
``/v1/me``), one with none. Each response must not be a 5xx, must match the schema and
the declared status codes, and every error must carry Tidings' error body.
``TIDINGS_FUZZ_EXAMPLES`` sets the examples per operation (``make fuzz`` runs many more
than CI does).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.python import asgi
from schemathesis.specs.openapi import checks as openapi_checks

from tests.conftest import CATALOG, create_pg_database, drop_pg_database, pg_url
from tidings.app.asgi import create_app
from tidings.app.wiring import build_runtime
from tidings.auth import tokens
from tidings.auth.service import AuthService
from tidings.kit import migrate
from tidings.kit.clock import SystemClock
from tidings.kit.db import Database
from tidings.kit.settings import Settings

EXAMPLES = int(os.environ.get("TIDINGS_FUZZ_EXAMPLES", "25"))
SECRET = "fuzz-secret-" + "x" * 32

CHECKS = [
    schemathesis.checks.not_a_server_error,
    openapi_checks.status_code_conformance,
    openapi_checks.content_type_conformance,
    openapi_checks.response_schema_conformance,
]


@schemathesis.check
def error_body(ctx: schemathesis.CheckContext, response: schemathesis.Response, case: Any) -> bool:
    """Every 4xx and 5xx answer is ``{"error": {"code": str, "message": str, ...}}``."""
    if response.status_code < 400:
        return True
    body = response.json()
    assert isinstance(body, dict), f"error body is not an object: {body!r}"
    error = body.get("error")
    assert isinstance(error, dict), f"error body has no 'error' object: {body!r}"
    assert isinstance(error.get("code"), str), f"error has no code: {body!r}"
    assert isinstance(error.get("message"), str), f"error has no message: {body!r}"
    return True


async def _operator_key(url: str) -> str:
    db = Database(url)
    try:
        auth = AuthService(db, SystemClock(), SECRET, dt.timedelta(hours=1))
        _key, plaintext = await auth.create_key("fuzz", ["*", "admin"])
        return plaintext
    finally:
        await db.dispose()


@contextlib.contextmanager
def _database(kind: str, folder: Path) -> Iterator[str]:
    if kind == "sqlite":
        url = f"sqlite+aiosqlite:///{folder / 'tidings.db'}"
        migrate.upgrade(url)
        yield url
        return
    name = asyncio.run(create_pg_database())
    try:
        url = pg_url(name)
        migrate.upgrade(url)
        yield url
    finally:
        asyncio.run(drop_pg_database(name))


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def credentials_and_app(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Any, str]]:
    """The application on a fresh database, and a key that may do everything."""
    folder: Path = tmp_path_factory.mktemp("fuzz")
    with _database(request.param, folder) as url:
        key = asyncio.run(_operator_key(url))
        fuzzed = Settings(
            data_dir=folder / "data",
            catalog=CATALOG,
            database_url=url,
            secret=SECRET,
            worker_poll_seconds=0.05,
            demo=False,
            # Rate limits have their own tests; here they would only cut the run short.
            rate_limit_per_second=0,
        )
        application = create_app(runtime=build_runtime(fuzzed))
        try:
            yield application, key
        finally:
            asgi.shutdown_lifespans()


def _headers_for(path: str, key: str) -> dict[str, str]:
    if path.startswith("/v1/me"):
        token = tokens.issue_user_token(
            SECRET, "u-fuzz", ttl=dt.timedelta(hours=1), now=dt.datetime.now(dt.UTC)
        )
        return {"Authorization": f"Bearer {token}"}
    return {"Authorization": f"Bearer {key}"}


def _fuzz(operation: Any, headers: dict[str, str] | None) -> None:
    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        case.call_and_validate(headers=headers, checks=CHECKS, additional_checks=[error_body])

    run()


@pytest.mark.parametrize("credentials", ["valid", "none"])
def test_every_operation_holds(credentials: str, credentials_and_app: tuple[Any, str]) -> None:
    application, key = credentials_and_app
    schema = schemathesis.openapi.from_asgi("/openapi.json", application)
    # The live inbox stream never ends by itself: its first event is the one to check.
    schema.config.max_stream_events = 1
    failures: list[str] = []
    fuzzed = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        headers = _headers_for(operation.path, key) if credentials == "valid" else None
        fuzzed += 1
        try:
            _fuzz(operation, headers)
        except (Exception, BaseExceptionGroup) as exc:
            failures.append(f"{operation.method.upper()} {operation.path}:\n{exc}")
    assert fuzzed > 20
    assert not failures, "\n\n".join(failures)
