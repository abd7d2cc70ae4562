"""``make bench``: the standard workloads and this machine's ceilings, in one run, one table.

Every workload of ``shared/BENCHMARKS.md`` runs against a ``tidings serve`` of its own
(a fresh PostgreSQL database, or with ``--db sqlite`` a fresh data folder, dropped
after), with the reference it is compared with measured in the same run:

* ceilings: PostgreSQL COPY of 1,000-row batches into a table shaped like the inbox
  (SQLite: executemany of 1,000 rows per transaction), a bare FastAPI endpoint under wrk
  (``bench/bare_app.py``), raw aiosmtplib → aiosmtpd with 1 and 8 connections;
* W1 direct (``pipeline_throughput.py``): events/s from the first batch POST to the
  last inbox row, against the COPY ceiling;
* W2 fan-out: one event to a topic; the time from its acceptance until every
  subscriber's inbox shows it (sampled over HTTP, every row counted in the database when
  the store keeps one per subscriber), and the rate at which its emails were planned;
* W3 lanes: a critical event every second on top of a W1 backlog; publish → item on
  the recipient's live stream, p50/p99;
* W4 email (``email_throughput.py``): W1-shaped events with an email address each,
  through ``tidings serve`` with DKIM to an aiosmtpd sink (SMTP pool 8), against raw
  aiosmtplib with 8 connections to the same sink, run before and after it;
* W5 inbox read: the badge (``/v1/me/inbox/counts``) plus the first page of 20 unread,
  over HTTP, p50/p99; django-notifications' figure is quoted, not measured;
* W6 steady (``sse_latency.py``): POST → SSE push latency at 200 and 500 events/s;
* single event (``ingest_vs_bare.py``): ``POST /v1/events`` req/s under wrk against the
  bare endpoint run before and after it.

A workload that fails prints its error in its row and the others still run; the exit
status is 1 if any failed. Rate limits are off in every server (they would cap the
load generators). Sizes are scaled down by default to stay within about ten minutes on
two cores; the flags below give the full ones.

    .venv/bin/python bench/suite.py                      # or: make bench
    .venv/bin/python bench/suite.py --only W1,W6 --code 3ef63ab
    .venv/bin/python bench/suite.py --full --markdown /tmp/bench.md
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import math
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import orjson

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import email_throughput  # noqa: E402
import ingest_vs_bare  # noqa: E402
import pipeline_throughput  # noqa: E402
import sse_latency  # noqa: E402
from _common import (  # noqa: E402
    _CODE,
    PG_HOST,
    PG_PORT,
    PG_USER,
    ROOT,
    CpuMeter,
    Deployment,
    PgCpu,
    RawConnection,
    _pg_admin,
    code_env,
    code_line,
    comment_event,
    cpu_seconds,
    free_port,
    install_uvloop,
    machine_busy_seconds,
    percentile,
    pyspy,
    sse_messages,
    stop_process,
    use_code,
    user_token,
    wait_http,
)
from profile_summary import summarize  # noqa: E402
from table import (  # noqa: E402
    Aim,
    Row,
    exit_status,
    fmt_cpu,
    fmt_ms,
    mean_reference,
    percentile_with_losses,
    ratio,
    render_markdown,
    render_text,
)

WORKLOADS = ("W1", "W2", "W3", "W4", "W5", "W6", "single", "ceilings")
DJANGO_P50_MS = (3.4, 3.9)
"""django-notifications-hq, badge + first page on W5, PostgreSQL, ORM without HTTP: the p50
of its second run in shared/BENCHMARKS.md (not measured here)."""

AIMS = {
    "W1": Aim("≥ 0.15x the COPY-1k ceiling", at_least=0.15),
    "W2 inbox": Aim("every inbox ≤ 5 s after acceptance", at_most=5.0),
    "W2 email": Aim("≥ 20,000 recipients/s", at_least=20_000),
    "W3": Aim("p99 < 100 ms", below=100.0),
    "W4": Aim("≥ 0.8x raw SMTP, same connections", at_least=0.8),
    "W5": Aim(f"p99 ≤ django-notifications' p50 ({DJANGO_P50_MS[0]} ms)", at_most=3.4),
    "W6": Aim("p99 < 50 ms at 500 events/s", below=50.0),
    "single": Aim("≥ 0.6x bare (aim 0.75x)", at_least=0.6, stretch=0.75),
}


# ---------------------------------------------------------------------------- helpers


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--db", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument(
        "--only",
        type=selection,
        default=list(WORKLOADS),
        help=f"comma-separated subset of {','.join(WORKLOADS)} (a workload's ceiling runs with it)",
    )
    parser.add_argument("--code", metavar="REF", help="measure this commit, not the work tree")
    parser.add_argument("--markdown", type=Path, metavar="PATH", help="also write the table here")
    parser.add_argument(
        "--full",
        action="store_true",
        help="the standard sizes of shared/BENCHMARKS.md instead of the scaled-down ones",
    )
    sized = parser.add_argument_group(
        "sizes (the scaled-down default, then what --full gives: the standard workload)"
    )
    for flag, default, full, text in SIZES:
        sized.add_argument(
            flag, type=float if "seconds" in flag else int, help=f"{text}: {default:,} ({full:,})"
        )
    parser.add_argument("--w6-rates", default="200,500")
    parser.add_argument("--copy-rows", type=int, default=100_000, help="rows of the COPY ceiling")
    parser.add_argument("--smtp-messages", type=int, default=2_000, help="per raw SMTP run")
    parser.add_argument(
        "--serve-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="pass ARG on to `tidings serve` (e.g. --serve-arg=--workers=1); repeatable",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="py-spy on the server(s) of every workload; summaries in DIR (slows them)",
    )
    args = parser.parse_args(argv)
    for flag, default, full, _ in SIZES:
        name = flag.removeprefix("--").replace("-", "_")
        if getattr(args, name) is None:
            setattr(args, name, full if args.full else default)
    return args


SIZES = [
    ("--w1-events", 20_000, 100_000, "W1 events"),
    ("--w2-subscribers", 20_000, 1_000_000, "W2 subscribers of the topic"),
    ("--w2-verify", 2_000, 10_000, "W2 subscribers whose badge is read after (untimed)"),
    ("--w2-timeout", 60, 1_800, "W2 seconds to wait for every inbox before giving up"),
    ("--w3-events", 20_000, 100_000, "W3: events of the W1 backlog"),
    ("--w4-events", 1_000, 10_000, "W4 events, one email each"),
    ("--w5-items", 100_000, 1_000_000, "W5 inbox items"),
    ("--w5-users", 1_000, 10_000, "W5 users they belong to"),
    ("--w5-samples", 1_000, 1_000, "W5 reads of badge + first page"),
    ("--w6-seconds", 15, 60, "W6 seconds per rate"),
    ("--single-seconds", 10, 10, "single event: seconds per wrk run"),
]


def selection(text: str) -> list[str]:
    """``--only W1,w6`` → ['W1', 'W6'], in the order they run; unknown names refused."""
    by_lower = {name.lower(): name for name in WORKLOADS}
    chosen = set()
    for part in text.split(","):
        name = by_lower.get(part.strip().lower())
        if name is None:
            raise argparse.ArgumentTypeError(f"unknown workload {part!r}: {', '.join(WORKLOADS)}")
        chosen.add(name)
    return [name for name in WORKLOADS if name in chosen]


def deployment(args: argparse.Namespace, **kwargs: Any) -> Deployment:
    d = Deployment(args.db, **kwargs)
    d.env["TIDINGS_RATE_LIMIT_PER_SECOND"] = "0"
    return d


def start(d: Deployment, args: argparse.Namespace) -> None:
    d.start(("serve", *args.serve_arg))


@contextlib.contextmanager
def profiled(args: argparse.Namespace, d: Deployment, name: str) -> Iterator[None]:
    """py-spy on the server (and its children) while the block runs, with ``--profile``."""
    if not args.profile or d.proc is None:
        yield
        return
    args.profile.mkdir(parents=True, exist_ok=True)
    raw = args.profile / f"{name}.raw"
    t0 = time.perf_counter()
    with pyspy(d.proc.pid, raw, subprocesses=True):
        yield
    text = summarize(raw.read_text(), rate=100, duration=time.perf_counter() - t0)
    (args.profile / f"{name}.txt").write_text(text)
    print(f"  profile of {name}: {args.profile / (name + '.txt')}")


def server_cpu(each: Sequence[float], total: float) -> Sequence[float] | float:
    return list(each) if each else total


def w1_namespace(events: int) -> argparse.Namespace:
    """pipeline_throughput's knobs for a W1 of ``events`` events."""
    return argparse.Namespace(
        events=events,
        users=10_000,
        zipf=1.1,
        payload_bytes=500,
        batch=500,
        concurrency=4,
        seed=1,
        poll=0.02,
        coarse_poll=0.5,
        stall_timeout=60.0,
        analyze_every=None,
    )


class HttpPool:
    """A few keep-alive connections shared by many coroutines (RawConnection each)."""

    def __init__(self, port: int, size: int) -> None:
        self._free: asyncio.Queue[RawConnection] = asyncio.Queue()
        self._all = [RawConnection("127.0.0.1", port) for _ in range(size)]
        for conn in self._all:
            self._free.put_nowait(conn)

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        conn = await self._free.get()
        try:
            for attempt in (1, 2):
                try:
                    return await conn.request(method, path, body, headers)
                except (OSError, ConnectionError, asyncio.IncompleteReadError):
                    await conn.close()  # the server closed an idle keep-alive: once more
                    if attempt == 2:
                        raise
            raise AssertionError("unreachable")
        finally:
            self._free.put_nowait(conn)

    async def json(self, method: str, path: str, token: str, body: Any = None) -> Any:
        headers = {"Authorization": f"Bearer {token}"}
        raw = b""
        if body is not None:
            raw = orjson.dumps(body)
            headers["Content-Type"] = "application/json"
        status, payload = await self.request(method, path, raw, headers)
        if status >= 300:
            raise RuntimeError(f"{method} {path} answered {status}: {payload[:300]!r}")
        return orjson.loads(payload) if payload else None

    async def close(self) -> None:
        for conn in self._all:
            await conn.close()


async def post_batches(pool: HttpPool, key: str, bodies: Sequence[bytes], in_flight: int) -> None:
    """POST every body to /v1/events/batch, ``in_flight`` at a time."""
    pending = list(reversed(bodies))
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    async def sender() -> None:
        while pending:
            body = pending.pop()
            status, payload = await pool.request("POST", "/v1/events/batch", body, headers)
            if status != 202:
                raise RuntimeError(f"batch answered {status}: {payload[:300]!r}")

    await asyncio.gather(*(sender() for _ in range(in_flight)))


class StoreQuery:
    """Counts read straight from the server's store over a connection of its own; a query
    the schema cannot answer gives None (the caller falls back to the API)."""

    def __init__(self, d: Deployment) -> None:
        self._d = d
        self._pg: asyncpg.Connection | None = None
        self._sqlite: sqlite3.Connection | None = None

    async def open(self) -> None:
        if self._d.pg_name:
            self._pg = await asyncpg.connect(
                host=PG_HOST, port=PG_PORT, user=PG_USER, database=self._d.pg_name
            )
        else:
            self._sqlite = sqlite3.connect(
                f"file:{self._d.sqlite_path}?mode=ro", uri=True, check_same_thread=False
            )

    @property
    def backend_pids(self) -> list[int]:
        return [self._pg.get_server_pid()] if self._pg is not None else []

    async def numbers(self, sql: str, *params: Any) -> list[float] | None:
        """The first column of a query's rows, on PostgreSQL (None elsewhere, or when
        the schema cannot answer)."""
        if self._pg is None:
            return None
        try:
            return [float(row[0]) for row in await self._pg.fetch(sql, *params)]
        except Exception:
            return None

    async def count(self, sql: str, *params: Any) -> int | None:
        try:
            if self._pg is not None:
                return int(await self._pg.fetchval(sql, *params))
            assert self._sqlite is not None
            lite = sql
            for i in range(len(params), 0, -1):
                lite = lite.replace(f"${i}", "?")
            conn = self._sqlite
            row = await asyncio.to_thread(lambda: conn.execute(lite, params).fetchone())
            return int(row[0])
        except Exception:
            return None

    async def close(self) -> None:
        if self._pg is not None:
            await self._pg.close()
        if self._sqlite is not None:
            self._sqlite.close()


def short_error(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    first = lines[0] if lines else type(exc).__name__
    return first[:300]


# ---------------------------------------------------------------------------- ceilings


INBOX_LIKE = """
CREATE TABLE bench_inbox (
    id varchar(64) PRIMARY KEY,
    user_id varchar(255) NOT NULL,
    tenant varchar(200) NOT NULL,
    event_id varchar(64) NOT NULL,
    type varchar(200) NOT NULL,
    category varchar(100) NOT NULL,
    title varchar(1000) NOT NULL,
    body text NOT NULL,
    action_url varchar(2000),
    actor {json},
    created_at {time} NOT NULL,
    seen_at {time},
    read_at {time},
    archived_at {time},
    group_key varchar(400),
    group_count integer NOT NULL DEFAULT 1,
    group_actors {json},
    updated_at {time}
);
CREATE INDEX bench_inbox_user ON bench_inbox (user_id, created_at, id);
CREATE INDEX bench_inbox_group ON bench_inbox (user_id, group_key);
CREATE INDEX bench_inbox_created ON bench_inbox (created_at);
"""
INBOX_COLUMNS = [
    "id",
    "user_id",
    "tenant",
    "event_id",
    "type",
    "category",
    "title",
    "body",
    "action_url",
    "actor",
    "created_at",
]


def inbox_like_rows(count: int, seed: int = 1) -> list[tuple[Any, ...]]:
    """Rows like W1's inbox items: Zipf-ish users, ~400-character bodies."""
    rng = random.Random(seed)
    now = dt.datetime.now(dt.UTC)
    body = ("Looks good to me; the numbers in the second section still need a source. " * 6)[:400]
    rows = []
    for i in range(count):
        user = min(10_000, int(rng.paretovariate(1.1)))
        actor = rng.randrange(1, 10_001)
        rows.append(
            (
                f"{uuid.uuid4().hex}{i:08d}",
                f"u-{user}",
                "default",
                uuid.uuid4().hex,
                "comment.created",
                "comments",
                f"User {actor} commented on Roadmap 2026",
                body,
                f"/boards/b-{i % 97}#comment-c-{i}",
                orjson.dumps({"id": f"u-{actor}", "name": f"User {actor}"}).decode(),
                now + dt.timedelta(microseconds=i),
            )
        )
    return rows


@dataclass
class Ceiling:
    rate: float
    label: str
    cpu: str


async def copy_ceiling(rows_total: int) -> Ceiling:
    """PostgreSQL: COPY (asyncpg copy_records_to_table) of 1,000-row batches into an
    inbox-shaped table with its three indexes, in a fresh database."""
    name = f"tidings_bench_{uuid.uuid4().hex[:12]}"
    await _pg_admin(f'CREATE DATABASE "{name}"')
    try:
        conn = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, database=name)
        try:
            await conn.execute(INBOX_LIKE.format(json="jsonb", time="timestamptz"))
            rows = inbox_like_rows(rows_total + 1000)
            batches = [rows[i : i + 1000] for i in range(0, len(rows), 1000)]
            backend = conn.get_server_pid()
            await conn.copy_records_to_table(
                "bench_inbox", records=batches[0], columns=INBOX_COLUMNS
            )
            pg0, me0, t0 = cpu_seconds(backend), time.process_time(), time.perf_counter()
            for batch in batches[1:]:
                await conn.copy_records_to_table(
                    "bench_inbox", records=batch, columns=INBOX_COLUMNS
                )
            wall = time.perf_counter() - t0
            pg, me = cpu_seconds(backend) - pg0, time.process_time() - me0
        finally:
            await conn.close()
    finally:
        await _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return Ceiling(
        rate=rows_total / wall,
        label="COPY 1k",
        cpu=fmt_cpu({"PostgreSQL": pg / wall, "client": me / wall}),
    )


def sqlite_ceiling(rows_total: int) -> Ceiling:
    """SQLite: executemany of 1,000 rows per transaction into an inbox-shaped table, WAL,
    synchronous=NORMAL, as Tidings opens its file."""
    folder = Path(tempfile.mkdtemp(prefix="tidings-bench-ceiling-"))
    try:
        conn = sqlite3.connect(folder / "ceiling.db", isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(INBOX_LIKE.format(json="JSON", time="DATETIME"))
        rows = [
            (*r[:10], r[10].replace(tzinfo=None).isoformat(" "))
            for r in inbox_like_rows(rows_total + 1000)
        ]
        marks = ", ".join("?" * len(INBOX_COLUMNS))
        sql = f"INSERT INTO bench_inbox ({', '.join(INBOX_COLUMNS)}) VALUES ({marks})"

        def batch(chunk: Sequence[tuple[Any, ...]]) -> None:
            conn.execute("BEGIN")
            conn.executemany(sql, chunk)
            conn.execute("COMMIT")

        batch(rows[:1000])
        me0, t0 = time.process_time(), time.perf_counter()
        for i in range(1000, len(rows), 1000):
            batch(rows[i : i + 1000])
        wall = time.perf_counter() - t0
        me = time.process_time() - me0
        conn.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return Ceiling(
        rate=rows_total / wall,
        label="SQLite executemany 1k",
        cpu=fmt_cpu({"this process (SQLite in it)": me / wall}),
    )


def run_copy(args: argparse.Namespace, ctx: dict[str, Any]) -> list[Row]:
    if args.db == "postgres":
        c = asyncio.run(copy_ceiling(args.copy_rows))
        name = "ceiling: PostgreSQL COPY, 1k-row batches, inbox-shaped table"
    else:
        c = sqlite_ceiling(args.copy_rows)
        name = "ceiling: SQLite executemany, 1k rows per transaction"
    ctx["copy"] = c
    return [Row(name, figure=f"{c.rate:,.0f} rows/s ({args.copy_rows:,} rows)", cpu=c.cpu)]


# ---------------------------------------------------------------------------- W1


def run_w1(args: argparse.Namespace, ctx: dict[str, Any]) -> list[Row]:
    ns = w1_namespace(args.w1_events)
    bodies, size = pipeline_throughput.build_bodies(ns, uuid.uuid4().hex[:10])
    with deployment(args) as d:
        start(d, args)
        with profiled(args, d, "W1"):
            r = asyncio.run(pipeline_throughput.measure(d, bodies, ns))
        pg = d.pg_name
    copy: Ceiling | None = ctx.get("copy")
    return [
        Row(
            "W1 direct",
            figure=f"{r.pipeline_rate:,.0f} events/s to the inbox ({r.events:,} events of "
            f"~{size} B; batch API accepted {r.ingest_rate:,.0f}/s)",
            reference=f"{copy.label}: {copy.rate:,.0f} rows/s" if copy else "no ceiling",
            ratio=ratio(r.pipeline_rate, copy.rate if copy else None),
            aim=AIMS["W1"],
            cpu=fmt_cpu(
                {
                    "server": server_cpu(r.server_each, r.server_cpu),
                    "PostgreSQL": r.pg_cpu if pg else None,
                }
            ),
        )
    ]


# ---------------------------------------------------------------------------- W2


TOPIC = "bench-fanout"


def subscriber(i: int) -> str:
    return f"f-{i:07d}"


async def add_subscribers_in_store(d: Deployment, n: int) -> tuple[bool, bool]:
    """Profiles with an email address and the topic's subscriptions, written straight into
    the store before the server starts (minutes faster than the API for a million).
    Returns (profiles written, subscriptions written); a schema that differs makes the
    caller use the API instead."""
    now = dt.datetime.now(dt.UTC)
    profiles = subscriptions = False
    if d.pg_name:
        conn = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, database=d.pg_name)
        try:
            with contextlib.suppress(Exception):
                async with conn.transaction():
                    await conn.copy_records_to_table(
                        "users",
                        records=(
                            (subscriber(i), f"{subscriber(i)}@example.com", now, now)
                            for i in range(n)
                        ),
                        columns=["id", "email", "created_at", "updated_at"],
                    )
                profiles = True
            with contextlib.suppress(Exception):
                async with conn.transaction():
                    await conn.execute(
                        "INSERT INTO topics (key, created_at) VALUES ($1, $2) "
                        "ON CONFLICT DO NOTHING",
                        TOPIC,
                        now,
                    )
                    await conn.copy_records_to_table(
                        "subscriptions",
                        records=((TOPIC, subscriber(i), now) for i in range(n)),
                        columns=["topic", "user_id", "created_at"],
                    )
                subscriptions = True
            await conn.execute("ANALYZE")
        finally:
            await conn.close()
        return profiles, subscriptions
    stamp = now.replace(tzinfo=None).isoformat(" ")
    conn = sqlite3.connect(d.sqlite_path, isolation_level=None)
    try:

        def write(*statements: tuple[str, Any]) -> bool:
            try:
                conn.execute("BEGIN")
                for sql, rows in statements:
                    conn.executemany(sql, rows)
                conn.execute("COMMIT")
                return True
            except sqlite3.Error:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                return False

        profiles = write(
            (
                "INSERT INTO users (id, email, created_at, updated_at) VALUES (?, ?, ?, ?)",
                ((subscriber(i), f"{subscriber(i)}@example.com", stamp, stamp) for i in range(n)),
            )
        )
        subscriptions = write(
            ("INSERT OR IGNORE INTO topics (key, created_at) VALUES (?, ?)", [(TOPIC, stamp)]),
            (
                "INSERT INTO subscriptions (topic, user_id, created_at) VALUES (?, ?, ?)",
                ((TOPIC, subscriber(i), stamp) for i in range(n)),
            ),
        )
        conn.execute("ANALYZE")
    finally:
        conn.close()
    return profiles, subscriptions


async def add_subscribers_by_api(
    pool: HttpPool, key: str, n: int, profiles: bool, subscriptions: bool
) -> None:
    if not profiles:

        async def put(i: int) -> None:
            body = {"email": f"{subscriber(i)}@example.com"}
            await pool.json("PUT", f"/v1/users/{subscriber(i)}", key, body)

        for startat in range(0, n, 500):
            await asyncio.gather(*(put(i) for i in range(startat, min(n, startat + 500))))
    if not subscriptions:
        for startat in range(0, n, 1000):
            ids = [subscriber(i) for i in range(startat, min(n, startat + 1000))]
            await pool.json("PUT", f"/v1/topics/{TOPIC}/subscribers", key, {"user_ids": ids})


@dataclass
class W2Result:
    subscribers: int
    inbox_s: float  # from acceptance (202) until every inbox showed it
    probes_s: float  # until every probed subscriber's badge showed it
    rows_s: float | None  # until the store held one inbox row per subscriber (if it does)
    email_s: float | None  # until every subscriber's email delivery was planned
    emails_planned: int | None
    post_ms: float
    verified: int
    how: str
    cpu: str
    emails_sent: int
    timed_out: float | None = None  # seconds, when it did not finish within --w2-timeout


async def w2_measure(
    d: Deployment, args: argparse.Namespace, sink: email_throughput.SinkProcess
) -> W2Result:
    n = args.w2_subscribers
    pool = HttpPool(d.port, 16)
    store = StoreQuery(d)
    await store.open()
    try:
        # Warm up: one direct event with an email, read back through the API and received
        # by the sink (what starts on the first email, e.g. compose processes, is not timed).
        warm_user = "u-warm"
        warm_token = user_token(d.secret, warm_user)
        warm = comment_event(f"warm-{uuid.uuid4().hex}", warm_user, 1, 1)
        warm["recipients"] = [{"id": warm_user, "email": "warm@example.com"}]
        await pool.json("POST", "/v1/events", d.key, warm)
        deadline = time.monotonic() + 120
        warmed = 0
        while (await pool.json("GET", "/v1/me/inbox/counts", warm_token))["unread"] < 1 or (
            warmed < 1
        ):
            if time.monotonic() > deadline:
                raise RuntimeError("the warm-up event never reached its inbox and the sink")
            warmed += (await asyncio.to_thread(sink.take))[0]
            await asyncio.sleep(0.05)

        step = max(1, n // 64)
        probes = sorted({*range(0, n, step), n - 1})
        tokens = {i: user_token(d.secret, subscriber(i)) for i in probes}

        async def readable(i: int) -> bool:
            counts = await pool.json("GET", "/v1/me/inbox/counts", tokens[i])
            return bool(counts["unread"] >= 1)

        assert d.proc is not None
        meter = CpuMeter({"server": d.proc.pid, "sink": sink.pid})
        pg = PgCpu(d.pg_name, exclude=store.backend_pids) if d.pg_name else None
        if pg:
            await pg.start()
        meter.start()
        event = comment_event(f"fanout-{uuid.uuid4().hex}", "unused", 1, 1)
        event.pop("recipients")
        event["topic"] = TOPIC
        t0 = time.perf_counter()
        accepted = await pool.json("POST", "/v1/events", d.key, event)
        t_acc = time.perf_counter()
        event_id = accepted["event_id"]

        rows_sql = "SELECT count(*) FROM inbox_items WHERE event_id = $1"
        email_sql = "SELECT count(*) FROM deliveries WHERE event_id = $1 AND channel = 'email'"
        pending = list(probes)
        probes_at: float | None = None  # when a round found every probe's badge showing it
        rows_at: float | None = None  # when the store held a row for every subscriber
        rows_at_confirmed = False  # the first full round after rows_at found them all
        email_at: float | None = None
        rows_seen = email_seen = 0
        rows_query = email_query = True
        last_progress, last_state = t_acc, (0, 0, 0)
        next_probe = drained = t_acc
        sent = 0  # emails the sink received meanwhile
        timed_out: float | None = None
        while True:
            now = time.perf_counter()
            if rows_query and rows_at is None:
                got = await store.count(rows_sql, event_id)
                if got is None:
                    rows_query = False
                else:
                    rows_seen = got
                    if got >= n:
                        rows_at = time.perf_counter()
            if email_query and email_at is None:
                got = await store.count(email_sql, event_id)
                if got is None:
                    email_query = False
                else:
                    email_seen = got
                    if got >= n:
                        email_at = time.perf_counter()
            # Reading badges over HTTP costs the server: while the store shows the rows
            # arriving, wait for the last; then ask every probe, until all show it.
            arriving = rows_query and rows_at is None and rows_seen > 0
            if pending and not arriving and now >= next_probe:
                ready = await asyncio.gather(*(readable(i) for i in pending))
                done = {i for i, ok in zip(pending, ready, strict=True) if ok}
                if rows_at is not None and len(pending) == len(probes) == len(done):
                    rows_at_confirmed = True
                pending = [i for i in pending if i not in done]
                next_probe = now + (0.1 if rows_at is not None or not rows_query else 0.5)
                if not pending:
                    probes_at = time.perf_counter()
            # Every probe shows it and the store holds none of its rows: inboxes are read
            # through the topic (fan-out on read), not from a row per subscriber.
            on_read = probes_at is not None and rows_query and rows_seen == 0
            rows_done = rows_at is not None or not rows_query or on_read
            if probes_at is not None and rows_done and (email_at is not None or not email_query):
                break
            if now - t_acc > args.w2_timeout:
                timed_out = now - t_acc
                break
            state = (len(pending), rows_seen, email_seen)
            if state != last_state:
                last_state, last_progress = state, now
            elif now - last_progress > 60:
                raise RuntimeError(
                    f"W2 stalled for 60 s: {len(pending)} of {len(probes)} probed subscribers "
                    f"without the item, {rows_seen:,}/{n:,} inbox rows, {email_seen:,}/{n:,} "
                    f"email deliveries; server log:\n{d.server_log_tail()}"
                )
            if d.proc.poll() is not None:
                raise RuntimeError(f"the server exited:\n{d.server_log_tail()}")
            if now - drained > 2.0:  # the sink keeps what it received until asked
                sent += (await asyncio.to_thread(sink.take))[0]
                drained = now
            near = rows_seen >= 0.95 * n or not rows_query
            await asyncio.sleep(0.02 if near else 0.25 if n <= 100_000 else 1.0)
        meter.stop()
        if pg:
            await pg.stop()
        sent += (await asyncio.to_thread(sink.take))[0]
        if timed_out is not None and pending:  # how far it got, for the report
            ready = await asyncio.gather(*(readable(i) for i in pending))
            pending = [i for i, ok in zip(pending, ready, strict=True) if not ok]

        # Not timed: the badge of a random sample of the other subscribers, and one page.
        rng = random.Random(2)
        sample = rng.sample(range(n), min(n, args.w2_verify)) if timed_out is None else []
        missing = 0
        for first in range(0, len(sample), 200):

            async def seen(i: int) -> bool:
                token = user_token(d.secret, subscriber(i))
                counts = await pool.json("GET", "/v1/me/inbox/counts", token)
                return bool(counts["unread"] >= 1)

            chunk = sample[first : first + 200]
            missing += sum(not ok for ok in await asyncio.gather(*(seen(i) for i in chunk)))
        page = await pool.json("GET", "/v1/me/inbox?limit=1", tokens[probes[-1]])
        if timed_out is None and (not page["items"] or page["items"][0]["event_id"] != event_id):
            raise RuntimeError(f"the last subscriber's first page is {page!r}")
        if missing:
            raise RuntimeError(
                f"{missing} of {len(sample)} sampled subscribers do not see the topic event "
                f"after every probe did ({rows_seen:,}/{n:,} inbox rows in the store)"
            )
    finally:
        await store.close()
        await pool.close()

    cpu = fmt_cpu(
        {
            "server": [v / meter.wall for v in meter.processes.get("server", [])],
            "PostgreSQL": pg.seconds / meter.wall if pg else None,
            "SMTP sink": meter.share("sink"),
        }
    )
    if timed_out is not None:
        return W2Result(
            subscribers=n,
            inbox_s=math.inf,
            probes_s=math.inf,
            rows_s=None,
            email_s=(email_at - t_acc) if email_at is not None else None,
            emails_planned=email_seen if email_query else None,
            post_ms=(t_acc - t0) * 1000,
            verified=0,
            how=f"stopped after {timed_out:.0f} s (--w2-timeout) with "
            + (f"{rows_seen:,} of {n:,} inbox rows in the store, " if rows_query else "")
            + f"{len(probes) - len(pending)} of {len(probes)} probed badges showing it",
            cpu=cpu,
            emails_sent=sent,
            timed_out=timed_out,
        )
    assert probes_at is not None
    if rows_at is not None:
        inbox_at = rows_at if rows_at_confirmed else max(rows_at, probes_at)
        how = "one inbox row per subscriber, counted in the store"
    elif not rows_query:
        inbox_at = probes_at
        how = "the store has no inbox_items rows to count: the probes alone"
    else:
        inbox_at = probes_at
        how = "no inbox row per subscriber in the store (read through the topic)"
    return W2Result(
        subscribers=n,
        inbox_s=inbox_at - t_acc,
        probes_s=probes_at - t_acc,
        rows_s=(rows_at - t_acc) if rows_at is not None else None,
        email_s=(email_at - t_acc) if email_at is not None else None,
        emails_planned=email_seen if email_query else None,
        post_ms=(t_acc - t0) * 1000,
        verified=len(sample) + len(probes),
        how=how,
        cpu=cpu,
        emails_sent=sent,
    )


def run_w2(args: argparse.Namespace, ctx: dict[str, Any]) -> list[Row]:
    n = args.w2_subscribers
    sink = email_throughput.SinkProcess("asyncio")
    try:
        with deployment(args) as d:
            d.env.update(
                TIDINGS_EMAIL_PROVIDER="smtp",
                TIDINGS_SMTP_HOST=sink.host,
                TIDINGS_SMTP_PORT=str(sink.port),
                TIDINGS_SMTP_SECURITY="none",
                TIDINGS_SMTP_POOL_SIZE="8",
            )
            t_setup = time.perf_counter()
            profiles, subscriptions = asyncio.run(add_subscribers_in_store(d, n))
            start(d, args)
            if not (profiles and subscriptions):
                if not profiles and n > 100_000:
                    raise RuntimeError("profiles could not be written to the store directly")

                async def by_api() -> None:
                    pool = HttpPool(d.port, 16)
                    try:
                        await add_subscribers_by_api(pool, d.key, n, profiles, subscriptions)
                    finally:
                        await pool.close()

                asyncio.run(by_api())
            print(f"  {n:,} subscribers set up in {time.perf_counter() - t_setup:.1f} s")
            with profiled(args, d, "W2"):
                r = asyncio.run(w2_measure(d, args, sink))
    finally:
        sink.stop()
    detail = f"{n:,} subscribers with an email address; {r.how}; {r.emails_sent:,} emails sent"
    detail += f" meanwhile; {r.verified:,} badges read after" if r.verified else " meanwhile"
    if r.timed_out is None:
        inbox = f"every inbox {r.inbox_s:.2f} s after acceptance ({n / r.inbox_s:,.0f} "
        inbox += "recipients/s; "
    else:
        inbox = f"not every inbox within {r.timed_out:.0f} s of acceptance ("
    rows = [
        Row(
            "W2 fan-out: inbox",
            figure=f"{inbox}{detail})",
            reference="aim 5 s",
            aim=AIMS["W2 inbox"],
            aim_value=r.inbox_s,
            cpu=r.cpu,
        )
    ]
    if r.email_s is not None:
        rate = n / r.email_s
        email = f"{rate:,.0f} recipients/s ({n:,} email deliveries planned {r.email_s:.2f} s after"
        email += " acceptance)"
    elif r.emails_planned is not None and r.timed_out is not None:
        # (a lower bound of the time, so an upper bound of the rate)
        rate = r.emails_planned / r.timed_out
        email = f"{rate:,.0f} recipients/s at most ({r.emails_planned:,} of {n:,} email "
        email += f"deliveries planned in {r.timed_out:.0f} s)"
    else:
        rows.append(
            Row(
                "W2 fan-out: email planning",
                error="not measured: the store has no email deliveries to count",
            )
        )
        return rows
    rows.append(
        Row(
            "W2 fan-out: email planning",
            figure=email,
            reference="aim 20,000/s",
            aim=AIMS["W2 email"],
            aim_value=rate,
            cpu="(the same interval)",
        )
    )
    return rows


# ---------------------------------------------------------------------------- W3


CRITICAL_USER = "u-critical"


def critical_event(key: str) -> dict[str, Any]:
    return {
        "type": "auth.password_reset",
        "idempotency_key": key,
        "recipients": [{"id": CRITICAL_USER}],
        "data": {
            "reset_url": "https://app.example.com/reset?token=bench",
            "expires_in_minutes": 30,
        },
    }


@dataclass
class W3Result:
    latencies_ms: list[float]
    lost: int
    answered_ms: list[float]
    """Each critical POST's answer, from its sending."""
    row_ms: list[float] | None
    """Each critical event's accept → inbox row (the server's stamps; PostgreSQL only)."""
    backlog_rate: float
    backlog_seconds: float
    server_each: list[float]
    pg_cpu: float | None


async def w3_measure(d: Deployment, args: argparse.Namespace) -> W3Result:
    ns = w1_namespace(args.w3_events)
    tag = uuid.uuid4().hex[:10]
    bodies, _ = pipeline_throughput.build_bodies(ns, tag)
    token = user_token(d.secret, CRITICAL_USER)
    received: dict[str, float] = {}
    ready = asyncio.Event()

    async def listen() -> None:
        path = f"/v1/me/inbox/stream?token={token}"
        async for name, data, at in sse_messages("127.0.0.1", d.port, path):
            if name == "item":
                received[orjson.loads(data)["event_id"]] = at
            elif name == "counts":
                ready.set()

    listener = asyncio.create_task(listen())
    pool = HttpPool(d.port, 6)
    publisher = RawConnection("127.0.0.1", d.port)
    headers = {"Authorization": f"Bearer {d.key}", "Content-Type": "application/json"}
    counter = d.counter()
    await counter.open()
    try:
        await asyncio.wait_for(ready.wait(), 30)
        # Warm up: a critical event through to the stream, and a small batch.
        status, payload = await publisher.request(
            "POST", "/v1/events", orjson.dumps(critical_event(f"warm-{tag}")), headers
        )
        if status != 202:
            raise RuntimeError(f"critical event answered {status}: {payload[:300]!r}")
        warm_id = orjson.loads(payload)["event_id"]
        deadline = time.monotonic() + 30
        while warm_id not in received:
            if time.monotonic() > deadline:
                raise RuntimeError("the warm-up critical event never reached the stream")
            await asyncio.sleep(0.02)
        baseline = await counter.count()
        target = baseline + args.w3_events

        assert d.proc is not None
        meter = CpuMeter({"server": d.proc.pid})
        pg = PgCpu(d.pg_name, exclude=counter.backend_pids) if d.pg_name else None
        if pg:
            await pg.start()
        meter.start()
        t0 = time.perf_counter()
        backlog = asyncio.create_task(post_batches(pool, d.key, bodies, 4))
        sent: list[tuple[float, str]] = []
        answered: list[float] = []
        backlog_end: float | None = None
        next_critical = t0 + 1.0
        i = 0
        while backlog_end is None:
            now = time.perf_counter()
            if now >= next_critical:
                i += 1
                body = orjson.dumps(critical_event(f"crit-{tag}-{i}"))
                t_sent = time.perf_counter()
                status, payload = await publisher.request("POST", "/v1/events", body, headers)
                if status != 202:
                    raise RuntimeError(f"critical event answered {status}: {payload[:300]!r}")
                answered.append((time.perf_counter() - t_sent) * 1000)
                sent.append((t_sent, orjson.loads(payload)["event_id"]))
                next_critical += 1.0
            if backlog.done() and backlog.exception():
                raise RuntimeError(f"the W1 backlog failed: {backlog.exception()!r}")
            if await counter.count() >= target:
                backlog_end = time.perf_counter()
                break
            if now - t0 > 600:
                raise RuntimeError("the W1 backlog did not drain within 600 s")
            await asyncio.sleep(0.05)
        meter.stop()
        if pg:
            await pg.stop()
        await backlog
        # The criticals sent while the backlog was there; give the last ones time to land.
        during = [(t, eid) for t, eid in sent if t < backlog_end]
        deadline = time.monotonic() + 10
        while any(eid not in received for _, eid in during) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        store = StoreQuery(d)
        await store.open()
        try:
            row_ms = await store.numbers(
                "SELECT extract(epoch FROM i.created_at - e.created_at) * 1000 FROM inbox_items i"
                " JOIN events e ON e.id = i.event_id WHERE e.id = ANY($1::text[])",
                [eid for _, eid in during],
            )
        finally:
            await store.close()
    finally:
        await counter.close()
        await publisher.close()
        await pool.close()
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
    latencies = [(received[eid] - t) * 1000 for t, eid in during if eid in received]
    wall = backlog_end - t0
    return W3Result(
        latencies_ms=latencies,
        lost=len(during) - len(latencies),
        answered_ms=answered[: len(during)],
        row_ms=row_ms,
        backlog_rate=args.w3_events / wall,
        backlog_seconds=wall,
        server_each=[v / meter.wall for v in meter.processes.get("server", [])],
        pg_cpu=pg.seconds / meter.wall if pg else None,
    )


def run_w3(args: argparse.Namespace, ctx: dict[str, Any]) -> list[Row]:
    with deployment(args) as d:
        start(d, args)
        with profiled(args, d, "W3"):
            r = asyncio.run(w3_measure(d, args))
    n = len(r.latencies_ms) + r.lost
    if n == 0:
        raise RuntimeError("the backlog drained before the first critical event")
    p50 = percentile_with_losses(r.latencies_ms, r.lost, 50)
    p99 = percentile_with_losses(r.latencies_ms, r.lost, 99)
    lost = f", {r.lost} never on the stream" if r.lost else ""
    parts = f"; POST answered p50 {fmt_ms(percentile(r.answered_ms, 50))} / p99 " + fmt_ms(
        percentile(r.answered_ms, 99)
    )
    if r.row_ms:
        parts += f", accept → inbox row p50 {fmt_ms(percentile(r.row_ms, 50))} / p99 " + fmt_ms(
            percentile(r.row_ms, 99)
        )
    return [
        Row(
            "W3 lanes",
            figure=f"critical events publish → stream item p50 {fmt_ms(p50)} ms, p99 "
            f"{fmt_ms(p99)} ms ({n} of them, 1/s, during a {args.w3_events:,}-event W1 backlog "
            f"planned at {r.backlog_rate:,.0f}/s{lost}{parts})",
            reference="aim 100 ms",
            aim=AIMS["W3"],
            aim_value=p99,
            cpu=fmt_cpu({"server": r.server_each, "PostgreSQL": r.pg_cpu}),
        )
    ]


# ---------------------------------------------------------------------------- W4 and SMTP


def raw_message(comment_chars: int) -> tuple[bytes, str]:
    """The message the raw runs re-send: one Tidings composes and signs (the W4 emails'
    size), or a synthetic one of that size if the code measured cannot compose."""
    catalog_dir = Path(_CODE["dir"]) / "catalog" if _CODE else ROOT / "catalog"
    try:
        work = email_throughput.Workload(catalog_dir, comment_chars)
        return work.compose(0, "raw").raw, "a Tidings email, DKIM-signed"
    except Exception as exc:
        body = b"X" * 76 + b"\r\n"
        head = b"From: n@tidings.test\r\nTo: u@example.com\r\nSubject: bench\r\n\r\n"
        return head + body * 115, f"a synthetic 9 kB message (Tidings did not compose: {exc})"


def run_w4(args: argparse.Namespace, ctx: dict[str, Any], pipeline: bool = True) -> list[Row]:
    import uvloop

    n = args.smtp_messages
    sink = email_throughput.SinkProcess("asyncio")
    rows: list[Row] = []
    try:
        raw, what = raw_message(200)
        host, port = sink.host, sink.port

        def raw_run(c: int) -> email_throughput.Measurement:
            return email_throughput.measured(
                "raw", c, sink, lambda: uvloop.run(email_throughput.run_raw(host, port, c, n, raw))
            )

        uvloop.run(email_throughput.run_raw(host, port, 1, 50, raw))  # warm-up
        sink.take()
        one = raw_run(1)
        before = raw_run(8)
        w4: Row | None = None
        if pipeline:
            try:
                p = email_throughput.run_pipeline(
                    sink,
                    args.w4_events,
                    8,
                    args.profile / "W4.raw" if args.profile else None,
                    db=args.db,
                    serve_args=args.serve_arg,
                    meter_pg=True,
                )
                if args.profile:
                    text = summarize((args.profile / "W4.raw").read_text(), duration=p.seconds)
                    (args.profile / "W4.txt").write_text(text)
            except Exception as exc:
                traceback.print_exc()
                w4 = Row("W4 email", aim=AIMS["W4"], error=short_error(exc))
        after = raw_run(8)
    finally:
        sink.stop()

    def cpu_of(m: email_throughput.Measurement) -> str:
        return fmt_cpu({"client": m.client_cpu / m.seconds, "sink": m.sink_cpu / m.seconds})

    ref = mean_reference([before.rate, after.rate])
    rows.append(
        Row(
            "ceiling: SMTP, aiosmtplib → aiosmtpd, 1 connection",
            figure=f"{one.rate:,.0f} msg/s ({n:,} of {len(raw):,} B, {what})",
            cpu=cpu_of(one),
        )
    )
    rows.append(
        Row(
            "ceiling: SMTP, aiosmtplib → aiosmtpd, 8 connections",
            figure=f"{ref:,.0f} msg/s (mean of {before.rate:,.0f} before "
            + ("W4 and " if pipeline else "and ")
            + f"{after.rate:,.0f} after)",
            cpu=cpu_of(before),
        )
    )
    if pipeline and w4 is None:
        pg_cpu = p.extra.get("pg_cpu")
        each_cpu = p.client_cpu / p.seconds
        states = p.extra.get("states") or {}
        w4 = Row(
            "W4 email",
            figure=f"{p.rate:,.0f} emails/s end to end ({args.w4_events:,} events → "
            f"{p.sent:,} DKIM-signed emails at the sink; SMTP pool 8"
            + (f"; deliveries {states}" if states else "")
            + ")",
            reference=f"raw SMTP, 8 connections: {ref:,.0f} msg/s",
            ratio=ratio(p.rate, ref),
            aim=AIMS["W4"],
            cpu=fmt_cpu(
                {
                    "server": each_cpu,
                    "PostgreSQL": pg_cpu / p.seconds if pg_cpu is not None else None,
                    "sink": p.sink_cpu / p.seconds,
                }
            ),
        )
    if w4 is not None:
        rows.insert(0, w4)
    return rows


# ---------------------------------------------------------------------------- W5


@dataclass
class W5Result:
    latencies_ms: list[float]
    counts_ms: list[float]
    page_ms: list[float]
    load_seconds: float
    loaded: str
    server_each: list[float]
    pg_cpu: float | None
    one_request: bool


class StoreRejected(Exception):
    """Items written straight into the store are not what the API reads back."""


@dataclass
class W5Plan:
    """W5's users, their tokens, and where each item goes: item i to user i % users; the
    oldest 70 % of a user's items read, the newest 30 % unread."""

    users: list[str]
    tokens: dict[str, str]
    total: int

    @classmethod
    def of(cls, d: Deployment, args: argparse.Namespace) -> W5Plan:
        users = [f"r-{u:05d}" for u in range(args.w5_users)]
        return cls(users, {u: user_token(d.secret, u) for u in users}, args.w5_items)

    def items_of(self, u: int) -> int:
        return len(range(u, self.total, len(self.users)))

    def read_of(self, u: int) -> int:
        return round(self.items_of(u) * 0.7)

    def unread(self) -> dict[str, int]:
        return {user: self.items_of(u) - self.read_of(u) for u, user in enumerate(self.users)}

    def totals(self) -> dict[str, int]:
        return {user: self.items_of(u) for u, user in enumerate(self.users)}


async def w5_load_into_store(d: Deployment, pool: HttpPool, plan: W5Plan) -> None:
    """Every item written straight into ``inbox_items``, each a copy of a row Tidings
    wrote for a real event (so columns this script does not know keep Tidings' values)
    with its own id, user, time and read flag; then every user's counts are read through
    the API and must be what was written, or StoreRejected (the store keeps more than
    that table: the caller loads through the API instead)."""
    template_user = "u-w5-template"
    token = user_token(d.secret, template_user)
    event = comment_event(f"w5-template-{uuid.uuid4().hex}", template_user, 7, 7)
    await pool.json("POST", "/v1/events", d.key, event)
    deadline = time.monotonic() + 60
    while (await pool.json("GET", "/v1/me/inbox/counts", token))["total"] < 1:
        if time.monotonic() > deadline:
            raise RuntimeError("the template event never reached its inbox")
        await asyncio.sleep(0.05)
    base = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    tag = uuid.uuid4().hex[:8]
    n_users = len(plan.users)

    def rows(template: dict[str, Any], stamp: Callable[[dt.datetime], Any]) -> Iterator[list[Any]]:
        for i in range(plan.total):
            u, j = i % n_users, i // n_users
            created = base + dt.timedelta(seconds=j, microseconds=u)
            read = stamp(created + dt.timedelta(minutes=1)) if j < plan.read_of(u) else None
            values = dict(template)
            values.update(
                id=f"w5-{tag}-{i:09d}",
                user_id=plan.users[u],
                event_id=f"w5-{tag}-e{i:09d}",
                created_at=stamp(created),
                read_at=read,
                seen_at=read,
            )
            yield [values[c] for c in template]

    try:
        if d.pg_name:
            conn = await asyncpg.connect(
                host=PG_HOST, port=PG_PORT, user=PG_USER, database=d.pg_name
            )
            try:
                found = await conn.fetchrow(
                    "SELECT * FROM inbox_items WHERE user_id = $1 LIMIT 1", template_user
                )
                if found is None:
                    raise StoreRejected("no inbox_items row for a delivered event")
                template = dict(found.items())
                await conn.copy_records_to_table(
                    "inbox_items", records=rows(template, lambda t: t), columns=list(template)
                )
                await conn.execute("ANALYZE")
            finally:
                await conn.close()
        else:
            with sqlite3.connect(d.sqlite_path, timeout=60) as lite:
                cursor = lite.execute(
                    "SELECT * FROM inbox_items WHERE user_id = ? LIMIT 1", (template_user,)
                )
                found = cursor.fetchone()
                if found is None:
                    raise StoreRejected("no inbox_items row for a delivered event")
                template = dict(zip([c[0] for c in cursor.description], found, strict=True))
                marks = ", ".join("?" * len(template))
                lite.executemany(
                    f"INSERT INTO inbox_items ({', '.join(template)}) VALUES ({marks})",
                    rows(template, lambda t: t.replace(tzinfo=None).isoformat(" ")),
                )
                lite.execute("ANALYZE")
    except (asyncpg.PostgresError, sqlite3.Error, KeyError) as exc:
        raise StoreRejected(f"the store refused the rows: {exc}") from exc
    await check_counts(pool, plan, "total", plan.totals(), exact=True)
    await check_counts(pool, plan, "unread", plan.unread(), exact=True)


async def check_counts(
    pool: HttpPool, plan: W5Plan, field: str, want: dict[str, int], *, exact: bool
) -> list[str]:
    """The users whose ``field`` count is below ``want`` (StoreRejected, with ``exact``,
    if any differs)."""
    short = []
    for first in range(0, len(plan.users), 100):
        chunk = plan.users[first : first + 100]
        answers = await asyncio.gather(
            *(pool.json("GET", "/v1/me/inbox/counts", plan.tokens[u]) for u in chunk)
        )
        for u, counts in zip(chunk, answers, strict=True):
            if exact and counts[field] != want[u]:
                raise StoreRejected(
                    f"{u}: {field} {counts[field]} through the API, {want[u]} written"
                )
            if counts[field] < want[u]:
                short.append(u)
    return short


async def w5_load_by_api(d: Deployment, pool: HttpPool, plan: W5Plan) -> None:
    """Every item as an event through the batch API; the older 70 % of them marked read."""
    tag = uuid.uuid4().hex[:10]
    n_users = len(plan.users)

    def bodies(indexes: Sequence[int]) -> list[bytes]:
        events = [comment_event(f"{tag}-{i}", plan.users[i % n_users], i % 997, i) for i in indexes]
        return [orjson.dumps({"events": events[k : k + 500]}) for k in range(0, len(events), 500)]

    read = [i for i in range(plan.total) if i // n_users < plan.read_of(i % n_users)]
    unread = [i for i in range(plan.total) if i // n_users >= plan.read_of(i % n_users)]
    await post_batches(pool, d.key, bodies(read), 4)
    want = {u: plan.read_of(k) for k, u in enumerate(plan.users)}
    await wait_for_counts(d, pool, plan, "total", want, len(read))
    for first in range(0, n_users, 50):
        await asyncio.gather(
            *(
                pool.json("POST", "/v1/me/inbox/mark", plan.tokens[u], {"read": True})
                for u in plan.users[first : first + 50]
            )
        )
    await post_batches(pool, d.key, bodies(unread), 4)
    await wait_for_counts(d, pool, plan, "unread", plan.unread(), plan.total)


async def wait_for_counts(
    d: Deployment, pool: HttpPool, plan: W5Plan, field: str, want: dict[str, int], rows: int
) -> None:
    """Until every user's ``field`` count (total or unread) reaches ``want``: the store's
    row count first when it has one (cheap), then every user's counts over HTTP."""
    deadline = time.monotonic() + 1800
    last, last_change = -1, time.monotonic()
    store = StoreQuery(d)
    await store.open()
    try:
        while True:
            got = await store.count("SELECT count(*) FROM inbox_items")
            if got is None or got >= rows:
                break
            if got != last:
                last, last_change = got, time.monotonic()
            elif time.monotonic() - last_change > 60:
                raise RuntimeError(f"no new inbox rows for 60 s at {got:,}/{rows:,}")
            await asyncio.sleep(0.5)
    finally:
        await store.close()
    while await check_counts(pool, plan, field, want, exact=False):
        if time.monotonic() > deadline:
            raise RuntimeError("the inboxes did not fill within 30 min")
        await asyncio.sleep(0.5)


async def w5_load(d: Deployment, args: argparse.Namespace, how: str) -> W5Plan:
    plan = W5Plan.of(d, args)
    pool = HttpPool(d.port, 8)
    try:
        if how == "store":
            await w5_load_into_store(d, pool, plan)
        else:
            await w5_load_by_api(d, pool, plan)
    finally:
        await pool.close()
    return plan


async def w5_sample(
    d: Deployment, args: argparse.Namespace, plan: W5Plan
) -> tuple[list[float], list[float], list[float], list[float], float | None, bool]:
    """``--w5-samples`` reads of a random user's badge and first page of 20 unread, one
    after the other on one keep-alive connection; each answer is checked. A server whose
    page carries the counts when asked (``counts=true``) answers both in one request;
    an older one is asked twice (badge, then page). The last value says which."""
    conn = RawConnection("127.0.0.1", d.port)
    rng = random.Random(5)
    unread = plan.unread()
    latencies, counts_ms, page_ms = [], [], []
    problems: list[str] = []
    one_request = False
    try:
        for u in rng.choices(plan.users, k=20):  # warm-up
            await conn.request("GET", "/v1/me/inbox/counts", b"", _auth(plan.tokens[u]))
            _, both = await conn.request(
                "GET", "/v1/me/inbox?status=unread&limit=20&counts=true", b"", _auth(plan.tokens[u])
            )
            one_request = orjson.loads(both).get("counts") is not None
        assert d.proc is not None
        meter = CpuMeter({"server": d.proc.pid})
        pg = PgCpu(d.pg_name) if d.pg_name else None
        if pg:
            await pg.start()
        profile = contextlib.ExitStack()
        profile.enter_context(profiled(args, d, "W5"))
        meter.start()
        for u in rng.choices(plan.users, k=args.w5_samples):
            headers = _auth(plan.tokens[u])
            t0 = time.perf_counter()
            if one_request:
                s1, page = await conn.request(
                    "GET", "/v1/me/inbox?status=unread&limit=20&counts=true", b"", headers
                )
                s2, badge = s1, orjson.dumps(orjson.loads(page)["counts"]) if s1 == 200 else b""
                t1 = t2 = time.perf_counter()
            else:
                s1, badge = await conn.request("GET", "/v1/me/inbox/counts", b"", headers)
                t1 = time.perf_counter()
                s2, page = await conn.request(
                    "GET", "/v1/me/inbox?status=unread&limit=20", b"", headers
                )
                t2 = time.perf_counter()
                counts_ms.append((t1 - t0) * 1000)
                page_ms.append((t2 - t1) * 1000)
            latencies.append((t2 - t0) * 1000)
            if s1 != 200 or s2 != 200:
                problems.append(f"{u}: {s1} {badge[:100]!r} / {s2} {page[:100]!r}")
                continue
            want = unread[u]
            got_unread = orjson.loads(badge)["unread"]
            items = orjson.loads(page)["items"]
            if got_unread != want or len(items) != min(20, want) or any(x["read"] for x in items):
                problems.append(f"{u}: badge {got_unread} (want {want}), {len(items)} items")
        meter.stop()
        profile.close()
        if pg:
            await pg.stop()
    finally:
        await conn.close()
    if problems:
        raise RuntimeError(f"{len(problems)} wrong answers, e.g. {problems[0]}")
    each = [v / meter.wall for v in meter.processes.get("server", [])]
    pg_share = pg.seconds / meter.wall if pg else None
    return latencies, counts_ms, page_ms, each, pg_share, one_request


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def w5_run(args: argparse.Namespace, how: str) -> W5Result:
    with deployment(args) as d:
        start(d, args)
        t0 = time.perf_counter()
        plan = asyncio.run(w5_load(d, args, how))
        load_seconds = time.perf_counter() - t0
        print(
            f"  {plan.total:,} items over {len(plan.users):,} users loaded in {load_seconds:.0f} s"
        )
        latencies, counts_ms, page_ms, each, pg, one = asyncio.run(w5_sample(d, args, plan))
    loaded = (
        "written straight into the store, every user's counts checked through the API"
        if how == "store"
        else "published through the batch API, 70 % marked read"
    )
    return W5Result(latencies, counts_ms, page_ms, load_seconds, loaded, each, pg, one)


def run_w5(args: argparse.Namespace, ctx: dict[str, Any]) -> list[Row]:
    try:
        r = w5_run(args, "store")
    except StoreRejected as exc:
        print(f"  loading straight into the store did not hold ({exc}): through the API instead")
        r = w5_run(args, "api")
    p50, p99 = percentile(r.latencies_ms, 50), percentile(r.latencies_ms, 99)
    low, high = DJANGO_P50_MS
    how = (
        "one request, the page with its counts"
        if r.one_request
        else f"two requests: counts p50 {fmt_ms(percentile(r.counts_ms, 50))}, page p50 "
        f"{fmt_ms(percentile(r.page_ms, 50))}"
    )
    return [
        Row(
            "W5 inbox read",
            figure=f"badge + first 20 unread over HTTP: p50 {fmt_ms(p50)} ms, p99 {fmt_ms(p99)} ms "
            f"({how}; {args.w5_samples:,} samples; "
            f"{args.w5_items:,} items over {args.w5_users:,} users, 30 % unread, {r.loaded})",
            reference=f"django-notifications p50 {low} to {high} ms (ORM, no HTTP; quoted from "
            "shared/BENCHMARKS.md, not measured here)",
            ratio=ratio(p99, low),
            aim=AIMS["W5"],
            aim_value=p99,
            cpu=fmt_cpu({"server": r.server_each, "PostgreSQL": r.pg_cpu}),
        )
    ]


# ---------------------------------------------------------------------------- W6


def run_w6(args: argparse.Namespace, ctx: dict[str, Any]) -> list[Row]:
    rows = []
    for rate in [float(r) for r in args.w6_rates.split(",")]:
        ns = argparse.Namespace(
            users=100,
            rate=rate,
            duration=args.w6_seconds,
            grace=10.0,
            payload_bytes=500,
            connections=128,
            seed=1,
        )
        label = f"W6 steady, {rate:.0f} events/s"
        try:
            with deployment(args) as d:
                start(d, args)
                with profiled(args, d, f"W6-{rate:.0f}"):
                    r = asyncio.run(sse_latency.measure(d, ns))
        except Exception as exc:
            traceback.print_exc()
            rows.append(Row(label, aim=AIMS["W6"] if rate == 500 else None, error=short_error(exc)))
            continue
        lost = r.sent - r.received
        # From the time each POST was due: a client that fell behind its schedule (every
        # connection waiting on the server) would otherwise hide that wait.
        pushed = r.push_from_due_ms or r.push_ms
        q = {p: percentile_with_losses(pushed, lost, p) for p in (50, 95, 99)}
        worst = math.inf if lost else max(pushed, default=math.nan)
        late = ""
        if r.wait_ms_max > 50:
            actual = percentile_with_losses(r.push_ms, lost, 99)
            late = (
                f"; the client fell up to {r.wait_ms_max:,.0f} ms behind its schedule, p99 "
                f"from the POST's actual start {fmt_ms(actual)} ms"
            )
        rows.append(
            Row(
                label,
                figure=f"POST due → SSE item p50 {fmt_ms(q[50])} / p95 {fmt_ms(q[95])} / p99 "
                f"{fmt_ms(q[99])} / max {fmt_ms(worst)} ms ({r.sent:,} events in "
                f"{args.w6_seconds:.0f} s to 100 open streams, {lost} not pushed; POST answered "
                f"p50 {fmt_ms(percentile(r.post_ms, 50))} ms{late})",
                reference="aim 50 ms at 500/s" if rate == 500 else "",
                aim=AIMS["W6"] if rate == 500 else None,
                aim_value=q[99],
                cpu=fmt_cpu(
                    {
                        "server": server_cpu(r.server_each, r.server_cpu),
                        "PostgreSQL": r.pg_cpu if args.db == "postgres" else None,
                    }
                ),
            )
        )
    return rows


# ---------------------------------------------------------------------------- single event


def run_single(args: argparse.Namespace, ctx: dict[str, Any], tidings: bool = True) -> list[Row]:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("wrk not found: apt-get install -y wrk")
    ns = argparse.Namespace(wrk=wrk, threads=1, connections=64, users=10_000)
    workdir = Path(tempfile.mkdtemp(prefix="tidings-bench-wrk-"))
    lua = workdir / "event.lua"
    lua.write_text(ingest_vs_bare.LUA)
    bare_port = free_port()
    with open(workdir / "bare.log", "wb") as log:
        bare = subprocess.Popen(
            [sys.executable, str(HERE / "bare_app.py"), "--port", str(bare_port)],
            cwd=ROOT,
            env=code_env(dict(os.environ)),
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    rows: list[Row] = []
    try:
        wait_http(f"http://127.0.0.1:{bare_port}/healthz", 30, bare, workdir / "bare.log")
        bare_url = f"http://127.0.0.1:{bare_port}"
        secs = args.single_seconds
        with contextlib.ExitStack() as stack:
            d = stack.enter_context(deployment(args)) if tidings else None
            if d is not None:
                start(d, args)
                assert d.proc is not None
                ingest_vs_bare.run_wrk(d.base_url, 2, ns, lua, d.key, {"server": d.proc.pid})
            ingest_vs_bare.run_wrk(bare_url, 2, ns, lua, "none", {"server": bare.pid})
            before = ingest_vs_bare.run_wrk(bare_url, secs, ns, lua, "none", {"server": bare.pid})
            t: ingest_vs_bare.WrkResult | None = None
            error: str | None = None
            if d is not None:
                assert d.proc is not None
                time.sleep(1.0)
                pg = PgCpu(d.pg_name) if d.pg_name else None
                try:
                    with profiled(args, d, "single"):
                        if pg:
                            asyncio.run(pg.start())
                        t = ingest_vs_bare.run_wrk(
                            d.base_url, secs, ns, lua, d.key, {"server": d.proc.pid}
                        )
                        if pg:
                            asyncio.run(pg.stop())
                except Exception as exc:
                    traceback.print_exc()
                    error = short_error(exc)
            time.sleep(1.0)
            after = ingest_vs_bare.run_wrk(bare_url, secs, ns, lua, "none", {"server": bare.pid})
    finally:
        stop_process(bare)
        shutil.rmtree(workdir, ignore_errors=True)
    bare_rate = mean_reference([before.rate, after.rate])
    assert bare_rate is not None
    if tidings:
        if t is None:
            rows.append(Row("single event", aim=AIMS["single"], error=error or "no result"))
        else:
            good = t.rate * (1 - (t.non_2xx / t.requests if t.requests else 0))
            bad = f", {t.non_2xx:,} answers not 2xx" if t.non_2xx else ""
            bad += f", {t.errors:,} socket errors" if t.errors else ""
            pg_share = pg.seconds / (t.requests / t.rate) if pg and t.rate else None
            rows.append(
                Row(
                    "single event",
                    figure=f"{good:,.0f} req/s POST /v1/events (wrk, 64 connections, "
                    f"{secs:.0f} s; p50 {t.p50_ms:.1f} ms, p99 {t.p99_ms:.1f} ms{bad})",
                    reference=f"bare FastAPI: {bare_rate:,.0f} req/s",
                    ratio=ratio(good, bare_rate),
                    aim=AIMS["single"],
                    cpu=fmt_cpu({"server": t.server_cpu, "PostgreSQL": pg_share, "wrk": t.wrk_cpu}),
                )
            )
    rows.append(
        Row(
            "ceiling: bare FastAPI POST /v1/events (bench/bare_app.py)",
            figure=f"{bare_rate:,.0f} req/s (mean of {before.rate:,.0f} before and "
            f"{after.rate:,.0f} after; p50 {before.p50_ms:.1f} ms)",
            cpu=fmt_cpu({"bare": before.server_cpu, "wrk": before.wrk_cpu}),
        )
    )
    return rows


# ---------------------------------------------------------------------------- main


def machine_lines(load0: tuple[float, ...], load1: tuple[float, ...], busy: float) -> list[str]:
    model, mem = "", ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError, ValueError), open("/proc/meminfo") as handle:
        mem = f", {int(handle.readline().split()[1]) / 1024 / 1024:.0f} GiB RAM"
    return [
        f"machine: {os.cpu_count()} cores (nproc), {model}{mem}; load average "
        f"{load0[0]:.2f} at the start, {load1[0]:.2f} at the end; the whole machine "
        f"{busy * 100:.0f} % busy over the run (others' work included)"
    ]


def store_line(db: str) -> str:
    if db == "sqlite":
        return (
            "store: SQLite (the embedded default), a fresh data folder per workload "
            f"(SQLite {sqlite3.sqlite_version})"
        )

    async def version() -> str:
        conn = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, database="postgres")
        try:
            rows = await conn.fetch(
                "SELECT name, setting FROM pg_settings WHERE name IN "
                "('server_version', 'autovacuum', 'synchronous_commit')"
            )
        finally:
            await conn.close()
        got = {r["name"]: r["setting"] for r in rows}
        return (
            f"PostgreSQL {got.get('server_version', '?').split()[0]} on loopback "
            f"(autovacuum={got.get('autovacuum')}, synchronous_commit="
            f"{got.get('synchronous_commit')})"
        )

    return f"store: {asyncio.run(version())}, a fresh database per workload, dropped after"


def sizes_line(args: argparse.Namespace) -> str:
    chosen = set(args.only)
    parts = [
        ("W1", f"W1 {args.w1_events:,} events"),
        ("W2", f"W2 {args.w2_subscribers:,} subscribers"),
        ("W3", f"W3 a {args.w3_events:,}-event backlog"),
        ("W4", f"W4 {args.w4_events:,} emails"),
        (
            "W5",
            f"W5 {args.w5_items:,} items / {args.w5_users:,} users, {args.w5_samples:,} samples",
        ),
        ("W6", f"W6 {args.w6_seconds:.0f} s per rate"),
        ("single", f"single event {args.single_seconds:.0f} s per wrk run"),
    ]
    shown = "; ".join(text for name, text in parts if name in chosen) or "ceilings only"
    return f"sizes: {shown}" + (
        "" if args.full else " (scaled down; --full for the sizes of shared/BENCHMARKS.md)"
    )


def steps(only: Sequence[str]) -> list[tuple[str, Callable[..., list[Row]]]]:
    """What runs, in order: a workload's ceiling runs with it."""
    chosen = set(only)
    plan: list[tuple[str, Callable[..., list[Row]]]] = []
    if chosen & {"W1", "ceilings"}:
        plan.append(("COPY ceiling", run_copy))
    plan += [(n, f) for n, f in (("W1", run_w1), ("W2", run_w2), ("W3", run_w3)) if n in chosen]
    if chosen & {"W4", "ceilings"}:
        plan.append(("W4 + SMTP ceilings", lambda a, c: run_w4(a, c, pipeline="W4" in chosen)))
    plan += [(n, f) for n, f in (("W5", run_w5), ("W6", run_w6)) if n in chosen]
    if chosen & {"single", "ceilings"}:
        plan.append(("single + bare", lambda a, c: run_single(a, c, tidings="single" in chosen)))
    return plan


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.code:
        use_code(args.code)
        sys.path.insert(0, _CODE["dir"] + "/src")
    if args.profile and not (shutil.which("py-spy", path=str(Path(sys.executable).parent))):
        sys.exit("py-spy is not installed: .venv/bin/pip install py-spy")
    install_uvloop()
    started = dt.datetime.now(dt.UTC)
    t_run = time.perf_counter()
    load0 = os.getloadavg()
    busy0 = machine_busy_seconds()
    print(f"make bench: {', '.join(args.only)} on {args.db}; {code_line()}", flush=True)
    rows: list[Row] = []
    ctx: dict[str, Any] = {}
    for name, run in steps(args.only):
        print(f"== {name} (load average {os.getloadavg()[0]:.2f})", flush=True)
        t = time.perf_counter()
        try:
            got = run(args, ctx)
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            traceback.print_exc()
            got = [Row(name, error=short_error(exc))]
        for row in got:
            print(f"  {row.workload}: " + (f"FAILED {row.error}" if row.error else row.figure))
        print(f"  ({time.perf_counter() - t:.0f} s)", flush=True)
        rows += got
    load1 = os.getloadavg()
    busy1 = machine_busy_seconds()
    busy = (busy1[0] - busy0[0]) / max(1e-9, busy1[1] - busy0[1])
    took = time.perf_counter() - t_run
    header = [
        f"date: {started:%Y-%m-%d %H:%M} UTC; took {took // 60:.0f} min {took % 60:.0f} s",
        *machine_lines(load0, load1, busy),
        code_line(),
        store_line(args.db),
        f"server: tidings serve {' '.join(args.serve_arg)}".rstrip()
        + "; rate limits off; each workload on a server of its own",
        sizes_line(args),
        "ratio: figure / reference (for W5, p99 over the peer's p50: lower is better)",
    ]
    print()
    print(render_text(header, rows))
    if args.markdown:
        args.markdown.write_text(render_markdown(header, rows))
        print(f"\nmarkdown: {args.markdown}")
    return exit_status(rows)


if __name__ == "__main__":
    sys.exit(main())
