"""``tidings serve`` with candidate fixes patched in at run time, to measure them.

The benchmarks measure Tidings as it is; this lets the same benchmark measure a change
proposed for ``src/`` before anyone makes it (``--patch NAME`` on the benchmark scripts
runs this instead of ``tidings serve``). Same settings, same uvicorn options. Patches:

* ``async-deps``: the request-scoped dependencies that only read ``app.state``
  (``events_service``, ``group_committer``, ``auth_service``, ``end_user`` …) are plain
  ``def``, so FastAPI runs each in the thread pool; this runs them inline on the event
  loop, as ``async def`` would.
* ``keys-any``: the idempotency look-up ``events.repository.existing_keys`` asks
  ``(tenant, key) IN ((…), (…) x500)``, which PostgreSQL plans as a 500-arm OR; this
  asks ``tenant = :t AND key IN (:keys)`` per tenant instead (one index scan with an
  array of keys).
* ``custom-plans``: PostgreSQL connections get ``plan_cache_mode = force_custom_plan``.
  asyncpg prepares every statement; after five runs PostgreSQL may switch a prepared
  statement to a generic plan chosen while the table was nearly empty and, without
  ANALYZE (autovacuum is off on the shared test server), keep it: a sequential scan.

    TIDINGS_… .venv/bin/python bench/experiment_serve.py --patch keys-any
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Iterable
from typing import Any

PATCHES = ("async-deps", "keys-any", "custom-plans")


def patch_keys_any() -> None:
    import sqlalchemy as sa
    from sqlalchemy.ext.asyncio import AsyncConnection

    from tidings.events import repository
    from tidings.kit.tables import idempotency_keys

    async def existing_keys(
        conn: AsyncConnection, pairs: Iterable[tuple[str, str]]
    ) -> dict[tuple[str, str], tuple[str, str]]:
        by_tenant: dict[str, list[str]] = {}
        for tenant, key in set(pairs):
            by_tenant.setdefault(tenant, []).append(key)
        c = idempotency_keys.c
        found: dict[tuple[str, str], tuple[str, str]] = {}
        for tenant, keys in by_tenant.items():
            for start in range(0, len(keys), 1000):
                rows = await conn.execute(
                    sa.select(c.tenant, c.key, c.body_hash, c.event_id).where(
                        c.tenant == tenant, c.key.in_(keys[start : start + 1000])
                    )
                )
                found.update({(r.tenant, r.key): (r.body_hash, r.event_id) for r in rows})
        return found

    repository.existing_keys = existing_keys  # type: ignore[assignment]


def patch_custom_plans() -> None:
    """PostgreSQL connections with ``plan_cache_mode = force_custom_plan``."""
    from tidings.kit import db

    original = db.create_async_engine

    def create_async_engine(url: Any, **kwargs: Any) -> Any:
        if str(url).startswith("postgresql"):
            connect_args = dict(kwargs.pop("connect_args", {}))
            settings = dict(connect_args.get("server_settings", {}))
            settings["plan_cache_mode"] = "force_custom_plan"
            connect_args["server_settings"] = settings
            kwargs["connect_args"] = connect_args
        return original(url, **kwargs)

    db.create_async_engine = create_async_engine  # type: ignore[assignment]


def patch_async_deps() -> None:
    """Call plain ``def`` dependencies inline instead of in the thread pool: what declaring
    them ``async def`` does. (Swapping the functions themselves does not survive FastAPI
    0.165's included-router wrappers, which rebuild the dependency trees; every Tidings
    dependency is a few attribute reads, so running all of them inline is the same.)"""
    from fastapi.dependencies import utils

    async def inline(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return func(*args, **kwargs)

    utils.run_in_threadpool = inline  # type: ignore[assignment]


def main() -> None:

    import uvicorn

    from tidings.app.asgi import create_app
    from tidings.kit import migrate
    from tidings.kit.settings import Settings

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--patch", action="append", choices=PATCHES, default=[])
    args = parser.parse_args()

    settings = Settings()
    logging.basicConfig(level=settings.log_level.upper())
    if settings.is_embedded:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        migrate.upgrade(settings.resolved_database_url)
    if "keys-any" in args.patch:
        patch_keys_any()
    if "custom-plans" in args.patch:
        patch_custom_plans()
    if "async-deps" in args.patch:
        patch_async_deps()
    app = create_app(settings)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
