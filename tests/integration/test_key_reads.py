"""A burst of requests with one key reads its row once, not once per request."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from tidings.app.runtime import Runtime
from tidings.kit import errors


def count_key_reads(runtime: Runtime) -> Iterator[list[str]]:
    """Every statement reading ``api_keys`` on the engine that authenticates keys."""
    seen: list[str] = []

    def before(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "FROM api_keys" in statement:
            seen.append(statement)

    engine = runtime.db.read_engine.sync_engine
    sa.event.listen(engine, "before_cursor_execute", before)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", before)


@pytest.fixture
def key_reads(runtime: Runtime) -> Iterator[list[str]]:
    yield from count_key_reads(runtime)


async def test_concurrent_requests_with_one_key_read_it_once(
    runtime: Runtime, key_reads: list[str]
) -> None:
    key, plaintext = await runtime.auth.create_key("burst", ["comment.*"])
    found = await asyncio.gather(
        *(runtime.auth.authenticate_key(f"Bearer {plaintext}") for _ in range(20))
    )
    assert {k.id for k in found} == {key.id}
    assert len(key_reads) == 1


async def test_a_refused_key_is_refused_to_every_waiting_request(
    runtime: Runtime, key_reads: list[str]
) -> None:
    _key, plaintext = await runtime.auth.create_key("burst", ["comment.*"])
    forged = plaintext[:-4] + "AAAA"
    outcomes = await asyncio.gather(
        *(runtime.auth.authenticate_key(f"Bearer {forged}") for _ in range(10)),
        return_exceptions=True,
    )
    assert all(isinstance(o, errors.Unauthenticated) for o in outcomes), outcomes
    assert len(key_reads) == 1
    # Not remembered: the next request reads again.
    with pytest.raises(errors.Unauthenticated):
        await runtime.auth.authenticate_key(f"Bearer {forged}")
    assert len(key_reads) == 2


async def test_a_key_revoked_while_it_is_read_is_refused_right_after(
    runtime: Runtime, key_reads: list[str]
) -> None:
    key, plaintext = await runtime.auth.create_key("burst", ["comment.*"])
    reading = asyncio.gather(
        *(runtime.auth.authenticate_key(f"Bearer {plaintext}") for _ in range(5)),
        return_exceptions=True,
    )
    await asyncio.sleep(0)  # the read has started
    await runtime.auth.revoke_key(key.id)
    # Those that asked before the revocation may pass or not, as their read fell.
    assert all(isinstance(o, errors.Unauthenticated) or o.id == key.id for o in await reading)
    with pytest.raises(errors.Unauthenticated):
        await runtime.auth.authenticate_key(f"Bearer {plaintext}")


async def test_a_request_that_goes_away_does_not_cancel_the_read_others_wait_for(
    runtime: Runtime, key_reads: list[str]
) -> None:
    key, plaintext = await runtime.auth.create_key("burst", ["comment.*"])
    first = asyncio.ensure_future(runtime.auth.authenticate_key(f"Bearer {plaintext}"))
    second = asyncio.ensure_future(runtime.auth.authenticate_key(f"Bearer {plaintext}"))
    await asyncio.sleep(0)
    first.cancel()
    assert (await second).id == key.id
    assert len(key_reads) == 1
