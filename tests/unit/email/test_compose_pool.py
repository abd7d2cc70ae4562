"""The compose pool: messages built and signed in worker processes, byte for byte as in
the event loop, and processes that end with ``close``, when idle, and when their parent
dies."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import dkim
import pytest

from tidings.email import mime
from tidings.email.compose_pool import BuildFailed, ComposePool
from tidings.email.composer import Draft, MessageBuilder, Sender
from tidings.email.dkim import DkimSigner, dns_record, generate_key
from tidings.email.message import OutgoingEmail, RenderedEmail

ROOT = Path(__file__).resolve().parents[3]
KEY = generate_key()
SENDER = Sender("notifications@tidings.test", "Tidings", "tidings.test")
NOW = dt.datetime(2026, 12, 7, 9, 30, tzinfo=dt.UTC)


def builder() -> MessageBuilder:
    return MessageBuilder(
        SENDER, DkimSigner(domain="tidings.test", selector="pool", private_key_pem=KEY)
    )


def draft(n: int, address: str | None = None) -> Draft:
    return Draft(
        delivery_id=f"d-{n}",
        rendered=RenderedEmail(
            subject=f"Comment #{n} on Roadmap — “quoted”",
            html=f"<p>Hello <b>user {n}</b>,</p>\n<p>{'Looks good. ' * 40}</p>",
            text=f"Hello user {n},\n\n{'Looks good. ' * 40}\n",
            locale="default",
        ),
        to_address=address or f"user{n}@example.com",
        to_name=f"User {n}",
        now=NOW,
        unsubscribe=mime.Unsubscribe(
            url=f"https://tidings.test/v1/unsubscribe/token-{n}",
            mailto=f"mailto:unsubscribe@tidings.test?subject=unsubscribe%20token-{n}",
        ),
    )


def verifies(raw: bytes) -> bool:
    record = dns_record(KEY).encode()

    def lookup(name: bytes, timeout: int = 5) -> bytes:
        return record if name.startswith(b"pool._domainkey.tidings.test") else b""

    return bool(dkim.verify(raw, dnsfunc=lookup))


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped, counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


async def gone(pids: list[int], timeout: float = 20.0) -> bool:
    """Whether every one of ``pids`` has ended within ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while any(alive(pid) for pid in pids):
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def test_the_processes_build_what_the_loop_builds_and_stop_on_close() -> None:
    pool = ComposePool(builder(), 1)
    await pool.start()
    assert pool.ready
    [pid] = pool.pids()
    assert pid != os.getpid()
    assert alive(pid)
    drafts = [draft(n) for n in range(5)] + [draft(5, "not an address")]
    built = await pool.build(drafts)
    assert pool.chunks_built == 1

    here = pool.build_here(drafts)
    assert built == here  # the same bytes: the signature has no time or randomness
    for message in built[:5]:
        assert isinstance(message, OutgoingEmail)
        assert verifies(message.raw)
        assert b"\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n" in message.raw
    assert isinstance(built[5], BuildFailed)
    assert built[5].delivery_id == "d-5"
    assert "not a plausible email address" in built[5].error

    await pool.close()
    assert not pool.running
    assert pool.pids() == []
    assert await gone([pid])


async def test_before_the_processes_answer_the_loop_builds() -> None:
    pool = ComposePool(builder(), 1)
    try:
        built = await pool.build([draft(1)])  # starts them, but does not wait
        assert pool.running
        assert pool.chunks_built == 0
        assert isinstance(built[0], OutgoingEmail)
        assert verifies(built[0].raw)
    finally:
        await pool.close()


async def test_no_processes_builds_in_the_loop() -> None:
    pool = ComposePool(builder(), 0)
    await pool.start()
    built = await pool.build([draft(1)])
    assert not pool.running
    assert pool.chunks_built == 0
    assert isinstance(built[0], OutgoingEmail)
    assert verifies(built[0].raw)


async def test_idle_processes_stop_and_start_again_when_needed() -> None:
    pool = ComposePool(builder(), 1, idle_seconds=0.2)
    try:
        await pool.start()
        await pool.build([draft(1)])
        [pid] = pool.pids()
        assert await gone([pid])
        assert not pool.running
        await pool.start()
        assert pool.started == 2
        assert isinstance((await pool.build([draft(2)]))[0], OutgoingEmail)
    finally:
        await pool.close()


def test_a_pool_counts_its_processes() -> None:
    with pytest.raises(ValueError, match="between 0 and 64"):
        ComposePool(builder(), -1)
    with pytest.raises(ValueError, match="between 0 and 64"):
        ComposePool(builder(), 65)


PARENT = textwrap.dedent(
    """
    import asyncio, sys, time
    sys.path[:0] = [sys.argv[1] + "/src", sys.argv[1]]
    from tests.unit.email.test_compose_pool import builder
    from tidings.email.compose_pool import ComposePool

    async def main():
        pool = ComposePool(builder(), 1)
        await pool.start()
        print(" ".join(map(str, pool.pids())), flush=True)
        await asyncio.sleep(120)

    asyncio.run(main())
    """
)


async def test_the_processes_end_when_their_parent_is_killed() -> None:
    parent = subprocess.Popen(  # noqa: ASYNC220 - the parent to kill, started at once
        [sys.executable, "-c", PARENT, str(ROOT)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        line = await asyncio.to_thread(parent.stdout.readline)
        pids = [int(pid) for pid in line.split()]
        assert len(pids) == 1
        assert alive(pids[0])
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        assert await gone(pids), "a compose process outlived its killed parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()
