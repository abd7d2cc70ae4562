"""Telling a database outage from a bug, and saying so once per outage.

A request that fails because the database does not answer (PostgreSQL down or out of
reach, a connection cut, the disk full, the SQLite file read-only) is not the caller's
fault and not a bug: it is a 503 with ``Retry-After``. The process logs one line when
the outage starts and one when the database answers again, instead of a traceback per
request; ``/readyz`` reports the database down meanwhile.
"""

from __future__ import annotations

import logging
import socket
import sqlite3
import time
import weakref
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from tidings.kit import errors
from tidings.kit.db import Database

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5
"""What a 503 tells the caller to wait before trying again."""
REPORTED_FOR_SECONDS = 30.0
"""How long ``/readyz`` reports a failure that a probe cannot see (a full disk, a
read-only file: reads still work) without a write succeeding since."""

# PostgreSQL error classes and codes that mean "the server cannot serve now", not
# "this statement is wrong": connection exception, insufficient resources (disk full,
# out of memory, too many connections), operator intervention (shutdown, cannot connect
# now), system error (I/O), read-only transaction, no such database, login refused.
_SQLSTATE_CLASSES = ("08", "53", "57P", "58")
_SQLSTATES = frozenset({"25006", "3D000", "28000", "28P01"})
_SQLITE_STORAGE = (
    "database or disk is full",
    "disk i/o error",
    "readonly database",
    "unable to open database file",
)
_NOT_ACCEPTING = "not currently accepting connections"
_DRIVERS = ("asyncpg", "aiosqlite", "sqlalchemy")


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database cannot serve now (rather than that a statement
    or a value is wrong)."""
    return _kind(exc) is not None


def _kind(exc: BaseException) -> str | None:
    """``connection`` (nothing answers), ``storage`` (reads work, writes do not), or
    None for any other error."""
    for cause in _causes(exc):
        if isinstance(cause, sqlite3.OperationalError):
            message = str(cause).lower()
            if any(text in message for text in _SQLITE_STORAGE):
                return "storage"
        if isinstance(cause, sa.exc.DBAPIError) and cause.connection_invalidated:
            return "connection"
        if isinstance(cause, sa.exc.TimeoutError):
            return "connection"  # no pooled connection came free in time
        if isinstance(cause, ConnectionError | socket.gaierror) and _from_driver(cause):
            return "connection"  # connecting failed: the driver raises these unwrapped
        state = getattr(cause, "sqlstate", None)
        if isinstance(state, str) and (
            state.startswith(_SQLSTATE_CLASSES)
            or state in _SQLSTATES
            or _NOT_ACCEPTING in str(cause)
        ):
            return "connection"
    return None


def _from_driver(exc: BaseException) -> bool:
    """Whether ``exc`` was raised inside a database driver (not by an HTTP or SMTP
    client, whose refused connection is no database outage)."""
    frames = exc.__traceback__
    while frames is not None:
        module = frames.tb_frame.f_globals.get("__name__", "")
        if isinstance(module, str) and module.startswith(_DRIVERS):
            return True
        frames = frames.tb_next
    return False


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, the driver error it wraps, and what caused those, each once."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        orig = getattr(current, "orig", None)
        pending.extend(
            [
                orig if isinstance(orig, BaseException) else None,
                current.__cause__,
                current.__context__,
            ]
        )


class Outages:
    """The database outage this process is in, if any: logged when it starts and when
    it ends, reported by ``/readyz`` while it lasts."""

    def __init__(self) -> None:
        self._since: float | None = None
        self._last: float = 0.0
        self._kind: str | None = None
        self._cause = ""
        self._refused = 0

    def unavailable(self, exc: BaseException) -> errors.Unavailable | None:
        """The 503 for ``exc`` if it is an outage (logged once per outage), else None."""
        kind = _kind(exc)
        if kind is None:
            return None
        now = time.monotonic()
        self._last = now
        self._refused += 1
        if self._since is None:
            self._since, self._kind = now, kind
            self._cause = f"{type(exc).__name__}: {_first_line(exc)}"[:200]
            log.error(
                "the database is unavailable (%s); answering 503 until it answers again",
                self._cause,
            )
        return errors.Unavailable(
            "Tidings cannot reach its database just now; nothing was accepted. Retry "
            f"after {RETRY_AFTER_SECONDS} seconds (with the same idempotency key).",
            retry_after=RETRY_AFTER_SECONDS,
        )

    def answered(self, *, wrote: bool) -> None:
        """The database ran a statement (``wrote``: one that changes rows): an outage
        of its kind is over."""
        if self._since is None or (self._kind == "storage" and not wrote):
            return
        log.warning(
            "the database answers again after %.0fs; %d requests were refused meanwhile",
            time.monotonic() - self._since,
            self._refused,
        )
        self._since, self._kind, self._refused = None, None, 0

    def problem(self) -> str | None:
        """What ``/readyz`` says of the database while an outage lasts, else None."""
        if self._since is None or time.monotonic() - self._last > REPORTED_FOR_SECONDS:
            return None
        return f"unavailable: {self._cause}"

    def watch(self, db: Database) -> Outages:
        """Learn from ``db`` that the database answers again: a statement that runs ends
        an outage of connections; a transaction that commits, one of storage."""
        for engine in db.engines:  # an engine's listeners hear its option engines too
            sync = engine.sync_engine
            event.listen(sync, "after_cursor_execute", self._after_execute)
            event.listen(sync, "commit", _committing)
            event.listen(sync, "handle_error", _failed)
            event.listen(sync.pool, "checkin", self._checkin)
        _attached[db] = self
        return self

    def _after_execute(self, *_args: Any) -> None:
        if self._since is not None:
            self.answered(wrote=False)

    def _checkin(self, _dbapi_connection: Any, record: Any) -> None:
        # The commit event comes before the commit: only a connection given back with
        # its mark still on (no error since) committed.
        if record is not None and record.info.pop(_COMMITTING, False):
            self.answered(wrote=True)


_COMMITTING = "tidings.outage.committing"


def _committing(conn: sa.Connection) -> None:
    conn.info[_COMMITTING] = True


def _failed(context: sa.engine.ExceptionContext) -> None:
    if context.connection is not None:
        context.connection.info.pop(_COMMITTING, None)


_attached: weakref.WeakKeyDictionary[Database, Outages] = weakref.WeakKeyDictionary()


def of(db: Database) -> Outages:
    """The outages of the process that owns ``db``."""
    found = _attached.get(db)
    if found is None:
        found = Outages().watch(db)
    return found


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc)
    return text.splitlines()[0] if text else ""
