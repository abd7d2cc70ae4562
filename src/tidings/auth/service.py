"""Use cases for keys and tokens: create, authenticate, issue."""

from __future__ import annotations

import asyncio
import datetime as dt
import time

from tidings.auth import keys, repository, tokens
from tidings.kit import errors, ids
from tidings.kit.clock import Clock
from tidings.kit.db import Database

_MAX_REMEMBERED = 10_000
"""Verified keys remembered at once; past it the memory starts afresh (keys are few)."""


class AuthService:
    """Authenticates producers and end users.

    A verified key is remembered for ``key_cache_seconds`` (``TIDINGS_KEY_CACHE_SECONDS``,
    1 s by default), so a burst of requests with one key costs one read of its row rather
    than one per request. That is also the bound on revocation: a key revoked by any
    process is refused by every process at most that long afterwards, and at once by the
    process that revoked it. With 0, every request reads the key's row.

    Requests that present a key while its row is being read wait for that one read
    instead of each reading it: a burst arriving as the remembered key expires costs
    one read, not one per request.
    """

    def __init__(
        self,
        db: Database,
        clock: Clock,
        secret: str,
        token_ttl: dt.timedelta,
        *,
        key_cache_seconds: float = 1.0,
    ) -> None:
        self._db = db
        self._clock = clock
        self._secret = secret
        self._token_ttl = token_ttl
        self._key_cache_seconds = key_cache_seconds
        self._verified: dict[str, tuple[float, keys.ApiKey]] = {}
        self._reading: dict[str, asyncio.Future[keys.ApiKey]] = {}
        self._revocations = 0

    async def create_key(self, name: str, scopes: list[str]) -> tuple[keys.ApiKey, str]:
        """A new API key with exactly ``scopes`` (type patterns and capabilities); returns
        it with its plaintext, which is never stored.

        Raises:
            errors.Invalid: no name, no scope, or a scope that is neither a known
                capability nor a type pattern.
        """
        if not name.strip():
            raise errors.Invalid("A key needs a name.", field="name")
        scopes = keys.checked_scopes(scopes)
        generated = keys.generate()
        key_id = ids.new_id()
        now = self._clock.now()
        async with self._db.transaction() as conn:
            await repository.insert(
                conn,
                key_id=key_id,
                name=name,
                prefix=generated.prefix,
                secret_hash=generated.secret_hash,
                scopes=scopes,
                now=now,
            )
        key = keys.ApiKey(key_id, name, generated.prefix, tuple(scopes), now)
        return key, generated.plaintext

    async def list_keys(self) -> list[keys.ApiKey]:
        async with self._db.reader() as conn:
            return await repository.all_keys(conn)

    async def revoke_key(self, key_id: str) -> None:
        async with self._db.transaction() as conn:
            if not await repository.revoke(conn, key_id, self._clock.now()):
                raise errors.NotFound(f"No active key with id {key_id!r}.", field="id")
        self._revocations += 1
        self._verified.clear()
        self._reading.clear()

    async def authenticate_key(self, authorization: str | None) -> keys.ApiKey:
        """The API key behind an ``Authorization: Bearer …`` header.

        Raises:
            errors.Unauthenticated: no key, a malformed key, an unknown or revoked key.
        """
        plaintext = _bearer(authorization)
        remembered = self._verified.get(plaintext)
        if remembered is not None and remembered[0] > time.monotonic():
            return remembered[1]
        prefix = keys.parse_prefix(plaintext)
        if prefix is None:
            raise errors.Unauthenticated("That is not a Tidings API key.", field="authorization")
        if self._key_cache_seconds <= 0:
            return await self._read_key(plaintext, prefix)
        reading = self._reading.get(plaintext)
        if reading is None:
            reading = asyncio.ensure_future(self._remember_key(plaintext, prefix))
            self._reading[plaintext] = reading
            reading.add_done_callback(lambda done: self._forget_reading(plaintext, done))
        # Shielded: a request that goes away does not cancel the read others wait for.
        return await asyncio.shield(reading)

    async def _remember_key(self, plaintext: str, prefix: str) -> keys.ApiKey:
        revocations = self._revocations
        key = await self._read_key(plaintext, prefix)
        # A key revoked while its row was being read is not remembered from that read.
        if revocations == self._revocations:
            if len(self._verified) >= _MAX_REMEMBERED:
                self._verified.clear()
            self._verified[plaintext] = (time.monotonic() + self._key_cache_seconds, key)
        return key

    def _forget_reading(self, plaintext: str, done: asyncio.Future[keys.ApiKey]) -> None:
        if self._reading.get(plaintext) is done:
            del self._reading[plaintext]
        if not done.cancelled():
            done.exception()  # retrieved: a refused key is no "never retrieved" warning

    async def _read_key(self, plaintext: str, prefix: str) -> keys.ApiKey:
        async with self._db.reader() as conn:
            found = await repository.by_prefix(conn, prefix)
        if found is None or not keys.matches(plaintext, found[1]) or found[0].revoked_at:
            raise errors.Unauthenticated("Unknown or revoked API key.", field="authorization")
        return found[0]

    async def key_by_prefix(self, prefix: str) -> keys.ApiKey:
        """The active key whose public prefix is ``prefix`` (the token a broker subject
        names it by).

        Raises:
            errors.Unauthenticated: no such key, or it was revoked.
        """
        async with self._db.reader() as conn:
            found = await repository.by_prefix(conn, prefix)
        if found is None or found[0].revoked_at:
            raise errors.Unauthenticated(
                f"No active API key has the prefix {prefix!r}.", field="subject"
            )
        return found[0]

    def issue_user_token(self, user_id: str, ttl: dt.timedelta | None = None) -> str:
        """A signed token for one end user's inbox."""
        if not user_id:
            raise errors.Invalid("A token needs a user id.", field="user_id")
        return tokens.issue_user_token(
            self._secret, user_id, ttl=ttl or self._token_ttl, now=self._clock.now()
        )

    def authenticate_user(self, authorization: str | None, query_token: str | None) -> str:
        """The user id behind a bearer header or a ``?token=`` (for EventSource)."""
        token = query_token if query_token else _bearer(authorization)
        return tokens.verify_user_token(self._secret, token)


def _bearer(authorization: str | None) -> str:
    if not authorization:
        raise errors.Unauthenticated(
            "Send 'Authorization: Bearer <key or token>'.", field="authorization"
        )
    scheme, _, credential = authorization.partition(" ")
    if scheme.lower() != "bearer" or not credential.strip():
        raise errors.Unauthenticated(
            "The Authorization header must be 'Bearer <key or token>'.", field="authorization"
        )
    return credential.strip()
