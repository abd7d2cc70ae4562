"""What idle live streams cost a server: memory per stream and CPU while nothing happens.

Starts ``tidings serve`` (fresh SQLite folder or PostgreSQL database), measures the
server's CPU over ``--seconds`` (default 10) with no stream open, opens ``--streams``
(default 1,000) ``GET /v1/me/inbox/stream`` connections, one per user (so no user's cap
closes any), waits for each stream's first ``counts``, lets the server settle, and
measures its CPU over the same time again. Prints the resident memory the streams added
(per 1,000 streams) and the idle CPU with and without them, and their ratio.

    .venv/bin/python bench/sse_idle.py
    .venv/bin/python bench/sse_idle.py --streams 1500 --code HEAD~3   # an older commit
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Deployment, code_line, cpu_seconds, install_uvloop, machine_line, use_code
from tidings.auth import tokens

SETTLE_SECONDS = 3.0
"""Pause after the streams are open, so the measured time holds no start-up work."""


def rss_kib(pid: int) -> int:
    """Resident memory of a process, in KiB."""
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def idle_cpu_percent(pid: int, seconds: float) -> float:
    """The process's CPU (user + system) over ``seconds`` of wall time, in % of a core."""
    start_cpu, start_wall = cpu_seconds(pid), time.perf_counter()
    time.sleep(seconds)
    return (cpu_seconds(pid) - start_cpu) / (time.perf_counter() - start_wall) * 100


async def open_stream(port: int, token: str, opened: asyncio.Event) -> None:
    """One stream, held open (reading its pings) until cancelled."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        path = f"/v1/me/inbox/stream?token={token}"
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        status = await reader.readline()
        if b" 200 " not in status:
            raise RuntimeError(f"a stream answered {status!r}")
        seen = b""
        while b"event: counts" not in seen:
            chunk = await reader.read(4096)
            if not chunk:
                raise RuntimeError("a stream ended before its first counts")
            seen += chunk
        opened.set()
        while await reader.read(4096):
            pass
    finally:
        writer.close()


async def hold_streams(
    port: int, secret: str, count: int, ready: asyncio.Event, measure: asyncio.Future[None]
) -> int:
    """Open ``count`` streams, set ``ready``, and keep them open until ``measure`` is
    done; returns how many opened."""
    now = dt.datetime.now(dt.UTC)
    openings: list[asyncio.Event] = []
    tasks: list[asyncio.Task[None]] = []
    for n in range(count):
        token = tokens.issue_user_token(secret, f"u-idle-{n}", ttl=dt.timedelta(hours=1), now=now)
        opened = asyncio.Event()
        openings.append(opened)
        tasks.append(asyncio.create_task(open_stream(port, token, opened)))
        if n % 100 == 99:
            await asyncio.sleep(0.05)  # a steady opening, not one burst
    waiting = [asyncio.create_task(event.wait()) for event in openings]
    try:
        await asyncio.wait([*waiting], timeout=120)
        failed = [task.exception() for task in tasks if task.done() and not task.cancelled()]
        if failed:
            raise RuntimeError(f"{len(failed)} streams failed; the first: {failed[0]!r}")
        ready.set()
        await measure
    finally:
        for task in [*tasks, *waiting]:
            task.cancel()
        await asyncio.gather(*tasks, *waiting, return_exceptions=True)
    return sum(event.is_set() for event in openings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--code", help="measure this commit instead of the work tree")
    args = parser.parse_args()
    if args.code:
        use_code(args.code)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = args.streams + 256
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    install_uvloop()
    print(machine_line())
    print(code_line())

    with Deployment(args.db) as deployment:
        deployment.start()
        assert deployment.proc is not None
        pid = deployment.proc.pid
        time.sleep(SETTLE_SECONDS)
        before_cpu = idle_cpu_percent(pid, args.seconds)
        before_rss = rss_kib(pid)

        async def run() -> tuple[int, float, int]:
            loop = asyncio.get_running_loop()
            ready = asyncio.Event()
            measure: asyncio.Future[None] = loop.create_future()
            holding = asyncio.create_task(
                hold_streams(deployment.port, deployment.secret, args.streams, ready, measure)
            )
            await asyncio.wait(
                [holding, asyncio.create_task(ready.wait())], return_when="FIRST_COMPLETED"
            )
            if holding.done():
                holding.result()
            await asyncio.sleep(SETTLE_SECONDS)
            cpu = await loop.run_in_executor(None, idle_cpu_percent, pid, args.seconds)
            rss = rss_kib(pid)
            measure.set_result(None)
            return await holding, cpu, rss

        opened, with_cpu, with_rss = asyncio.run(run())
        asked = args.streams

    per_thousand = (with_rss - before_rss) / max(1, opened) * 1000 / 1024
    print(f"streams open: {opened:,} of {asked:,}")
    print(f"RSS: {before_rss / 1024:,.1f} MiB before, {with_rss / 1024:,.1f} MiB with streams")
    print(f"RSS per 1,000 streams: {per_thousand:,.1f} MiB")
    print(
        f"idle CPU over {args.seconds:g} s: {before_cpu:.1f} % without streams, "
        f"{with_cpu:.1f} % with them (x{with_cpu / max(before_cpu, 0.01):.2f})"
    )


if __name__ == "__main__":
    main()
