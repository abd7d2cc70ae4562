"""W6 steady: latency from publishing an event to its ``item`` on the recipient's SSE stream.

Starts ``tidings serve`` (fresh SQLite folder or PostgreSQL database), opens one
``GET /v1/me/inbox/stream`` per user (``--users``, default 100), waits for each stream's
first ``counts``, then publishes single events (``POST /v1/events``, W1-shaped, ~500 B)
to random users among them at a fixed rate (open loop: each POST starts on its schedule
whatever the previous ones are doing). For each event: the time just before its POST
and the time its ``item`` message arrived (matched by ``event_id``) give the push
latency; the POST's own response time is reported too. Accept -> inbox row comes from
the database afterwards: ``inbox_items.created_at - events.created_at`` (both stamped by
the server's clock; the row's stamp is taken when it is planned, just before its commit).

The client is one process on uvloop with a minimal HTTP/1.1 client (httpx alone took
more CPU than the server): ``--connections`` keep-alive publisher connections and one
connection per stream. If every publisher connection is busy an event waits; the
longest such wait is printed, so a client that cannot keep the schedule would show.

    .venv/bin/python bench/sse_latency.py --db sqlite
    .venv/bin/python bench/sse_latency.py --db postgres --rate 500 --duration 60 --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import random
import statistics
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    CpuMeter,
    Deployment,
    PgCpu,
    RawConnection,
    code_line,
    comment_event,
    install_uvloop,
    machine_line,
    percentile,
    sse_messages,
    summary,
    use_code,
    user_token,
)


@dataclass
class RunResult:
    sent: int
    received: int
    push_ms: list[float]
    post_ms: list[float]
    row_ms: list[float]
    achieved_rate: float
    wait_ms_max: float
    cpu: str
    push_from_due_ms: list[float] = field(default_factory=list)
    server_cpu: float = 0.0  # cores, over the measured interval
    pg_cpu: float = 0.0  # cores, the database's backends (PostgreSQL only)
    server_each: list[float] = field(default_factory=list)  # cores, per server process


def pcts(values: list[float]) -> str:
    if not values:
        return "none"
    return (
        f"p50 {percentile(values, 50):6.1f}  p95 {percentile(values, 95):6.1f}  "
        f"p99 {percentile(values, 99):6.1f}  max {max(values):7.1f} ms"
    )


async def measure(d: Deployment, args: argparse.Namespace) -> RunResult:
    users = [f"u-sse-{i}" for i in range(args.users)]
    user_tokens = {u: user_token(d.secret, u) for u in users}
    host, port = "127.0.0.1", d.port
    received: dict[str, float] = {}
    ready = 0
    all_ready = asyncio.Event()

    async def listen(user: str) -> None:
        nonlocal ready
        first = True
        path = f"/v1/me/inbox/stream?token={user_tokens[user]}"
        async for name, data, at in sse_messages(host, port, path):
            if name == "item":
                received[orjson.loads(data)["event_id"]] = at
            elif first and name == "counts":
                first = False
                ready += 1
                if ready == len(users):
                    all_ready.set()

    rng = random.Random(args.seed)
    total = int(args.rate * args.duration)
    run_tag = uuid.uuid4().hex[:10]
    bodies = [
        orjson.dumps(comment_event(f"{run_tag}-{i}", rng.choice(users), 1, i, args.payload_bytes))
        for i in range(total)
    ]
    headers = {"Authorization": f"Bearer {d.key}", "Content-Type": "application/json"}
    sent_at: dict[str, float] = {}
    due_at: dict[str, float] = {}  # when each event was scheduled to be published
    post_ms: list[float] = []
    waits_ms: list[float] = []
    failures: list[str] = []
    queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
    answered = 0  # POSTs finished, answered or failed

    async def publisher() -> None:
        nonlocal answered
        conn = RawConnection(host, port)
        try:
            while (item := await queue.get()) is not None:
                due, body = item
                start = time.perf_counter()
                waits_ms.append((start - due) * 1000)
                try:
                    status, payload = await conn.request("POST", "/v1/events", body, headers)
                except (OSError, ConnectionError, asyncio.IncompleteReadError) as exc:
                    failures.append(repr(exc))
                    await conn.close()
                    continue
                finally:
                    answered += 1
                post_ms.append((time.perf_counter() - start) * 1000)
                if status != 202:
                    failures.append(f"{status} {payload[:200]!r}")
                    continue
                event_id = orjson.loads(payload)["event_id"]
                sent_at[event_id] = start
                due_at[event_id] = due
        finally:
            await conn.close()

    listeners = [asyncio.create_task(listen(u)) for u in users]
    await asyncio.wait_for(all_ready.wait(), 60)
    publishers = [asyncio.create_task(publisher()) for _ in range(args.connections)]
    # Warm-up: the publishers' connections and the server's first-call paths; every
    # warm-up POST answered before the measured ones start.
    for i in range(2 * args.connections):
        warm = orjson.dumps(comment_event(f"warm-{run_tag}-{i}", users[0], 1, i))
        queue.put_nowait((time.perf_counter(), warm))
    while answered < 2 * args.connections:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    # ... and pushed, so that no backlog of them is planned during the measurement.
    settle = time.perf_counter() + 30
    while time.perf_counter() < settle and not all(k in received for k in sent_at):  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    sent_at.clear()
    due_at.clear()
    post_ms.clear()
    waits_ms.clear()

    assert d.proc is not None
    meter = CpuMeter({"server": d.proc.pid})
    pg = PgCpu(d.pg_name) if d.pg_name else None
    if pg:
        await pg.start()
    meter.start()
    t0 = time.perf_counter()
    for i, body in enumerate(bodies):
        due = t0 + i / args.rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait((due, body))
    t_end = time.perf_counter()
    for _ in publishers:
        queue.put_nowait(None)
    await asyncio.gather(*publishers)
    deadline = time.perf_counter() + args.grace
    while time.perf_counter() < deadline and not all(k in received for k in sent_at):  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    meter.stop()
    if pg:
        await pg.stop()
    for task in listeners:
        task.cancel()
    await asyncio.gather(*listeners, return_exceptions=True)
    if failures:
        print(f"  {len(failures)} POSTs failed, e.g. {failures[0]}")

    push_ms = [(received[k] - t) * 1000 for k, t in sent_at.items() if k in received]
    # The same from the moment each POST was due: what a producer that cannot wait for a
    # free connection sees (a client that falls behind its schedule hides that wait).
    due_ms = [(received[k] - t) * 1000 for k, t in due_at.items() if k in received]
    # The server's own stamps, read from its tables: a schema without them leaves this out.
    counter = d.counter()
    await counter.open()
    try:
        rows = await counter.fetch(
            "SELECT e.created_at, i.created_at FROM inbox_items i "
            f"JOIN events e ON e.id = i.event_id WHERE e.idempotency_key LIKE '{run_tag}-%'"
        )
    except Exception as exc:
        print(f"  accept -> row not read from the database: {exc!r}")
        rows = []
    finally:
        await counter.close()
    row_ms = [(_ts(b) - _ts(a)) * 1000 for a, b in rows]
    return RunResult(
        sent=len(sent_at),
        received=len(push_ms),
        push_ms=push_ms,
        post_ms=post_ms,
        row_ms=row_ms,
        achieved_rate=len(bodies) / (t_end - t0),
        wait_ms_max=max(waits_ms, default=0.0),
        push_from_due_ms=due_ms,
        cpu=meter.describe()
        + (f", postgres backends {pg.seconds / meter.wall * 100:.0f} %" if pg else ""),
        server_cpu=meter.share("server"),
        pg_cpu=pg.seconds / meter.wall if pg else 0.0,
        server_each=[v / meter.wall for v in meter.processes.get("server", [])],
    )


def _ts(value: object) -> float:
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    assert isinstance(value, dt.datetime)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.timestamp()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--users", type=int, default=100, help="users with an open stream")
    parser.add_argument("--rate", type=float, default=200.0, help="events per second")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of publishing")
    parser.add_argument("--runs", type=int, default=3, help="runs, each on a fresh server")
    parser.add_argument("--grace", type=float, default=10.0, help="seconds to wait for stragglers")
    parser.add_argument("--payload-bytes", type=int, default=500)
    parser.add_argument(
        "--connections", type=int, default=128, help="publisher keep-alive connections"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--code",
        metavar="REF",
        help="measure this commit (e.g. HEAD) instead of the work tree, which others edit",
    )
    parser.add_argument(
        "--patch",
        action="append",
        default=[],
        choices=["async-deps", "keys-any", "custom-plans"],
        help="run Tidings with a candidate fix patched in (bench/experiment_serve.py)",
    )
    args = parser.parse_args()
    if args.code:
        use_code(args.code)
    install_uvloop()

    print(
        f"W6-style SSE latency on {args.db}: {args.users} open streams, {args.rate:.0f} "
        f"events/s for {args.duration:.0f} s, single POST /v1/events; {args.runs} runs"
    )
    print(f"machine: {machine_line()}")
    print(code_line() + (f"; patched: {', '.join(args.patch)}" if args.patch else ""))
    results: list[RunResult] = []
    for run in range(1, args.runs + 1):
        with Deployment(args.db, patches=args.patch) as d:
            d.start()
            r = asyncio.run(measure(d, args))
        results.append(r)
        lost = r.sent - r.received
        print(
            f"run {run}: {r.sent:,} accepted at {r.achieved_rate:.0f}/s, "
            f"{r.received:,} pushed ({lost} not received), "
            f"client wait for a connection max {r.wait_ms_max:.0f} ms"
        )
        print(f"  POST -> SSE item : {pcts(r.push_ms)}")
        print(f"  POST response    : {pcts(r.post_ms)}")
        print(f"  accept -> row    : {pcts(r.row_ms)}")
        print(f"  {r.cpu}", flush=True)
    print()
    for label, pick in (
        ("POST -> SSE item", lambda r: r.push_ms),
        ("POST response   ", lambda r: r.post_ms),
        ("accept -> row   ", lambda r: r.row_ms),
    ):
        for q in (50, 95, 99):
            values = [percentile(pick(r), q) for r in results]
            print(f"median {label} p{q}: {summary(values, '{:.1f}')} ms")
        print(
            f"median {label} max: "
            f"{summary([max(pick(r)) if pick(r) else float('nan') for r in results], '{:.1f}')} ms"
        )
    complete = sum(r.sent == r.received for r in results)
    wait = statistics.median(r.wait_ms_max for r in results)
    print(
        f"runs where every event was pushed: {complete}/{len(results)}; "
        f"median of the longest client wait for a free connection {wait:.0f} ms"
    )


if __name__ == "__main__":
    main()
