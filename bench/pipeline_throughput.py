"""W1 direct: events/s from the first batch POST until the last inbox row exists.

Workload W1 (shared/BENCHMARKS.md): ``comment.created`` events, one recipient each,
recipients drawn from 10,000 users with a Zipf(1.1) skew, ~500-byte events, sent through
``POST /v1/events/batch`` in batches of 500. The script starts ``tidings serve`` itself
(API and worker in one process) on a fresh SQLite data folder or a fresh PostgreSQL
database for every run, polls ``count(*)`` of ``inbox_items`` straight from the
database, and reports per run:

* pipeline rate: events / (time of last inbox row - time of first POST)
* ingest rate: events / (time the last batch was answered - time of first POST)
* CPU of the server process (per thread), of its PostgreSQL backends, of the machine

then the median and spread over the runs. ``--profile`` adds one more run with py-spy
sampling the server (and, on PostgreSQL, ``pg_stat_activity`` sampled every 20 ms),
whose figures are printed apart (sampling slows it a little).

    .venv/bin/python bench/pipeline_throughput.py --db sqlite
    .venv/bin/python bench/pipeline_throughput.py --db postgres --full --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    PG_HOST,
    PG_PORT,
    PG_USER,
    CpuMeter,
    Deployment,
    PgCpu,
    Zipf,
    code_line,
    comment_event,
    install_uvloop,
    machine_line,
    pyspy,
    summary,
    use_code,
)
from pg_activity import PgActivity
from profile_summary import summarize

W1_TOTAL = 100_000


@dataclass
class RunResult:
    events: int
    pipeline_rate: float
    ingest_rate: float
    ingest_seconds: float
    total_seconds: float
    rows_at_ingest_end: int
    cpu: str
    server_cpu: float
    pg_cpu: float
    pg_activity: str = ""
    server_each: list[float] = field(default_factory=list)  # cores, per server process


def build_bodies(args: argparse.Namespace, run_tag: str) -> tuple[list[bytes], int]:
    """Pre-serialised batch bodies (so the client spends nothing on JSON while timing)."""
    rng = random.Random(args.seed)
    recipients = Zipf(args.users, args.zipf, rng).sample(args.events)
    actors = [rng.randrange(1, args.users + 1) for _ in range(args.events)]
    events = [
        comment_event(f"{run_tag}-{i}", f"u-{r}", a, i, args.payload_bytes)
        for i, (r, a) in enumerate(zip(recipients, actors, strict=True))
    ]
    size = round(statistics.mean(len(orjson.dumps(e)) for e in events[:1000]))
    bodies = [
        orjson.dumps({"events": events[i : i + args.batch]})
        for i in range(0, len(events), args.batch)
    ]
    return bodies, size


async def measure(
    d: Deployment, bodies: list[bytes], args: argparse.Namespace, *, sample_pg: bool = False
) -> RunResult:
    headers = {"Authorization": f"Bearer {d.key}", "Content-Type": "application/json"}
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=64)
    counter = d.counter()
    await counter.open()
    async with httpx.AsyncClient(
        base_url=d.base_url, headers=headers, limits=limits, timeout=120
    ) as client:
        # Warm up: one small batch through the whole pipeline, so that first-call costs
        # (connections, statement compilation) are not in the figure.
        warm = [comment_event(f"warm-{uuid.uuid4().hex}-{i}", "u-warm", 1, i) for i in range(5)]
        response = await client.post("/v1/events/batch", content=orjson.dumps({"events": warm}))
        response.raise_for_status()
        while await counter.count() < 5:  # noqa: ASYNC110 - polling the database is the point
            await asyncio.sleep(0.05)
        baseline = await counter.count()
        target = baseline + args.events

        pg = PgCpu(d.pg_name, exclude=counter.backend_pids) if d.pg_name else None
        assert d.proc is not None
        meter = CpuMeter({"server": d.proc.pid})
        if pg:
            await pg.start()
        activity = PgActivity(d.pg_name) if d.pg_name and sample_pg else None
        if activity:
            await activity.start()
        analyzer = (
            asyncio.create_task(analyze_every(d.pg_name, args.analyze_every))
            if d.pg_name and args.analyze_every
            else None
        )
        meter.start()

        pending = list(reversed(bodies))
        ingest_done = 0.0
        t0 = time.perf_counter()

        async def sender() -> None:
            nonlocal ingest_done
            while pending:
                body = pending.pop()
                resp = await client.post("/v1/events/batch", content=body)
                if resp.status_code != 202:
                    raise RuntimeError(f"batch answered {resp.status_code}: {resp.text[:500]}")
                ingest_done = max(ingest_done, time.perf_counter())

        senders = [asyncio.create_task(sender()) for _ in range(args.concurrency)]
        rows_at_ingest_end = -1
        last_count, last_progress = baseline, time.perf_counter()
        t_last = 0.0
        try:
            while True:
                count = await counter.count()
                now = time.perf_counter()
                if rows_at_ingest_end < 0 and all(s.done() for s in senders):
                    for s in senders:
                        s.result()  # raise a sender's failure
                    rows_at_ingest_end = count - baseline
                if count >= target:
                    t_last = now
                    break
                if count > last_count:
                    last_count, last_progress = count, now
                elif now - last_progress > args.stall_timeout:
                    raise RuntimeError(
                        f"no new inbox rows for {args.stall_timeout} s at {count - baseline}"
                        f"/{args.events}; server log:\n{d.server_log_tail()}"
                    )
                # count(*) costs the database a scan: poll coarsely until the end is near.
                near = count - baseline >= 0.9 * args.events
                await asyncio.sleep(args.poll if near else args.coarse_poll)
        finally:
            for s in senders:
                s.cancel()
            await asyncio.gather(*senders, return_exceptions=True)
        meter.stop()
        if analyzer:
            analyzer.cancel()
        if activity:
            await activity.stop()
        if pg:
            await pg.stop()
    await counter.close()
    if rows_at_ingest_end < 0:
        rows_at_ingest_end = args.events
    ingest_seconds = ingest_done - t0
    total_seconds = t_last - t0
    cpu = meter.describe()
    if pg:
        cpu += f", postgres backends {pg.seconds / meter.wall * 100:.0f} %"
    return RunResult(
        events=args.events,
        pipeline_rate=args.events / total_seconds,
        ingest_rate=args.events / ingest_seconds,
        ingest_seconds=ingest_seconds,
        total_seconds=total_seconds,
        rows_at_ingest_end=rows_at_ingest_end,
        cpu=cpu,
        server_cpu=meter.used["server"] / meter.wall,
        pg_cpu=(pg.seconds / meter.wall) if pg else 0.0,
        pg_activity=activity.report() if activity else "",
        server_each=[v / meter.wall for v in meter.processes.get("server", [])],
    )


async def analyze_every(db_name: str, seconds: float) -> None:
    """ANALYZE the database every ``seconds``: what autovacuum's autoanalyze would do on a
    server where it runs (the shared test server here has ``autovacuum = off``)."""
    conn = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, database=db_name)
    try:
        while True:
            await asyncio.sleep(seconds)
            await conn.execute("ANALYZE")
    finally:
        await conn.close()


def one_run(args: argparse.Namespace, profile_to: Path | None = None) -> RunResult:
    bodies, _ = build_bodies(args, uuid.uuid4().hex[:10])
    with Deployment(args.db, patches=args.patch) as d:
        d.start()
        assert d.proc is not None
        if profile_to is None:
            return asyncio.run(measure(d, bodies, args))
        with pyspy(d.proc.pid, profile_to, rate=args.profile_rate):
            return asyncio.run(measure(d, bodies, args, sample_pg=True))


def describe(result: RunResult) -> str:
    return (
        f"pipeline {result.pipeline_rate:,.0f} events/s ({result.total_seconds:.1f} s), "
        f"ingest {result.ingest_rate:,.0f} events/s ({result.ingest_seconds:.1f} s), "
        f"inbox rows when ingest ended {result.rows_at_ingest_end:,}/{result.events:,}\n"
        f"      {result.cpu}"
    )


def pg_settings() -> str:
    async def query() -> str:
        conn = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, database="postgres")
        try:
            rows = await conn.fetch(
                "SELECT name, setting FROM pg_settings WHERE name IN "
                "('autovacuum', 'synchronous_commit', 'shared_buffers', 'server_version')"
            )
        finally:
            await conn.close()
        return ", ".join(f"{r['name']}={r['setting']}" for r in rows)

    return asyncio.run(query())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument(
        "--events", type=int, default=50_000, help="events per run (default 50,000)"
    )
    parser.add_argument("--full", action="store_true", help=f"W1 in full: {W1_TOTAL:,} events")
    parser.add_argument("--batch", type=int, default=500, help="events per batch request")
    parser.add_argument(
        "--concurrency", type=int, default=4, help="batch requests in flight (default 4)"
    )
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--zipf", type=float, default=1.1, help="Zipf exponent of recipients")
    parser.add_argument("--payload-bytes", type=int, default=500, help="JSON size of one event")
    parser.add_argument("--runs", type=int, default=3, help="measured runs (fresh server each)")
    parser.add_argument(
        "--poll", type=float, default=0.02, help="seconds between row counts near the end"
    )
    parser.add_argument(
        "--coarse-poll",
        type=float,
        default=0.5,
        help="seconds between row counts before 90 %% of the rows exist",
    )
    parser.add_argument("--stall-timeout", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--analyze-every",
        type=float,
        metavar="SECONDS",
        help="PostgreSQL: run ANALYZE this often during the run, as autovacuum would "
        "(check `SHOW autovacuum` on the server: the shared one here has it off)",
    )
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
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="FILE",
        help="after the measured runs, one more run under py-spy; raw stacks to FILE",
    )
    parser.add_argument("--profile-rate", type=int, default=100, help="py-spy samples/s")
    args = parser.parse_args()
    if args.code:
        use_code(args.code)
    if args.full:
        args.events = W1_TOTAL
    install_uvloop()

    _, size = build_bodies(argparse.Namespace(**{**vars(args), "events": 1000}), "size")
    print(
        f"W1 direct on {args.db}: {args.events:,} events x 1 recipient, {args.users:,} users "
        f"Zipf({args.zipf}), ~{size} B/event, batches of {args.batch}, "
        f"{args.concurrency} in flight; {args.runs} runs"
    )
    print(f"machine: {machine_line()}")
    print(code_line() + (f"; patched: {', '.join(args.patch)}" if args.patch else ""))
    if args.db == "postgres":
        print(f"PostgreSQL: {pg_settings()}")
    results: list[RunResult] = []
    for run in range(1, args.runs + 1):
        result = one_run(args)
        results.append(result)
        print(f"run {run}: {describe(result)}", flush=True)
    if results:
        print(
            f"\nmedian pipeline (first POST -> last inbox row): "
            f"{summary([r.pipeline_rate for r in results])} events/s"
        )
        print(
            f"median ingest (batch API accepted):            "
            f"{summary([r.ingest_rate for r in results])} events/s"
        )
        print(
            f"median server process CPU:                     "
            f"{summary([r.server_cpu * 100 for r in results])} % of one core"
        )
        if args.db == "postgres":
            print(
                f"median PostgreSQL backends CPU:                "
                f"{summary([r.pg_cpu * 100 for r in results])} % of one core"
            )
    if args.profile:
        result = one_run(args, args.profile)
        print(f"\nprofiled run (py-spy, not in the medians): {describe(result)}")
        text = args.profile.read_text()
        print(summarize(text, rate=args.profile_rate, duration=result.total_seconds))
        if result.pg_activity:
            print("\n" + result.pg_activity)


if __name__ == "__main__":
    main()
