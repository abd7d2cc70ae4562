"""Console sessions: sealed cookies that expire and cannot be forged, and CSRF tokens
bound to one session."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pytest

from tidings.console import sessions
from tidings.kit.counters_memory import InMemoryCounters
from tidings.kit.db import Database

SECRET = "s" * 48
NOW = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)


def test_a_sealed_session_opens_with_the_same_secret_until_it_expires() -> None:
    session = sessions.start("key-1", NOW)
    value = sessions.seal(SECRET, session)
    assert "key-1" not in value.split(".")[1]
    opened = sessions.unseal(SECRET, value, NOW + dt.timedelta(hours=11))
    assert opened == session.__class__(
        "key-1", session.expires_at.replace(microsecond=0), session.nonce
    )
    assert sessions.unseal(SECRET, value, NOW + sessions.LIFETIME) is None


@pytest.mark.parametrize(
    "tamper",
    [
        lambda v: v[:-1] + ("A" if v[-1] != "A" else "B"),
        lambda v: "x" + v,
        lambda v: v.split(".")[0],
        lambda v: v + ".extra",
        lambda v: "",
    ],
)
def test_a_changed_cookie_opens_to_nothing(tamper: Callable[[str], str]) -> None:
    value = sessions.seal(SECRET, sessions.start("key-1", NOW))
    assert sessions.unseal(SECRET, tamper(value), NOW) is None


def test_another_secret_opens_nothing() -> None:
    value = sessions.seal(SECRET, sessions.start("key-1", NOW))
    assert sessions.unseal("t" * 48, value, NOW) is None
    assert sessions.unseal(SECRET, None, NOW) is None


def test_a_csrf_token_belongs_to_one_session() -> None:
    mine, theirs = sessions.start("key-1", NOW), sessions.start("key-1", NOW)
    token = sessions.csrf_token(SECRET, mine)
    assert sessions.csrf_ok(SECRET, mine, token)
    assert not sessions.csrf_ok(SECRET, theirs, token)
    assert not sessions.csrf_ok(SECRET, mine, None)
    assert not sessions.csrf_ok(SECRET, mine, "")
    # A session's signature is not its CSRF token.
    assert token != sessions.seal(SECRET, mine).split(".")[1]


@pytest.mark.parametrize("value", ["é", "bödy.sïgnature", "abc.dé", "\udcff.x"])
def test_a_cookie_with_text_outside_ascii_opens_nothing(value: str) -> None:
    assert sessions.unseal(SECRET, value, NOW) is None


@pytest.mark.parametrize("presented", ["é", "\udcff", "ü" * 43])
def test_a_csrf_token_with_text_outside_ascii_is_refused(presented: str) -> None:
    session = sessions.start("key-1", NOW)
    assert not sessions.csrf_ok(SECRET, session, presented)
    assert sessions.csrf_ok(SECRET, session, sessions.csrf_token(SECRET, session))


async def test_a_signed_out_session_stays_ended_until_it_would_have_expired(
    tmp_path: Path,
) -> None:
    counters = InMemoryCounters()
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'console.db'}", pool_size=1)
    session, other = sessions.start("key-1", NOW), sessions.start("key-1", NOW)
    try:
        await sessions.end(counters, db, session, NOW)
        assert await sessions.ended(counters, db, session, NOW + dt.timedelta(hours=11))
        assert not await sessions.ended(counters, db, other, NOW)
        assert not await sessions.ended(counters, db, session, session.expires_at)
    finally:
        await db.dispose()
