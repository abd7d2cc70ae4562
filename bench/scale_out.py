"""Scale-out: W1, W6-steady latency and W2 fan-out on several processes, JetStream and Redis.

Each measured run gets a fresh PostgreSQL database and its own processes, started by
this script with their output in log files (printed, tail first, when something fails):

* ``serve-db``: ``tidings serve`` alone, database queue (what the rest of
  docs/benchmarks.md measured);
* ``db-1w``: ``tidings api`` + 1 ``tidings worker``, database queue: the reference (a)
  that every ratio is quoted against;
* ``js-1w``: ``tidings api`` + 1 worker + ``tidings scheduler``, JetStream queue, Redis
  counters, NATS live hub (b);
* ``js-2w``: the same with 2 workers (c).

JetStream runs go to a NATS server of this script's own (``.venv/bin/nats-server``,
single node, file storage in a temporary folder) unless ``--nats-url`` names one; every
run uses a unique ``TIDINGS_NATS_PREFIX`` and ``TIDINGS_REDIS_PREFIX``, and its streams
and Redis keys are deleted afterwards. With several workers, the measurement starts only
once the partitions are spread evenly between them (their PostgreSQL advisory locks).

What is measured, as median and spread over ``--runs``, the topologies of one run one
after the other (their order rotates from run to run), so that ratios compare like with
like on this shared machine:

1. ``w1``: W1 direct (100,000 ``comment.created`` events, one recipient each, Zipf(1.1)
   over 10,000 users, batches of 500 via ``POST /v1/events/batch``, 4 in flight):
   events/s from the first POST to the last ``inbox_items`` row (``count(*)`` polled
   from PostgreSQL), and ingest events/s (last batch answered).
2. ``latency``: W6 steady: single-event ``POST /v1/events`` at ``--rate`` for
   ``--seconds`` (open loop, 128 keep-alive connections); accept (202 received) → the
   inbox row as seen by a poller that looks for the accepted events' rows every 10 ms.
   Also the server's own stamps (``inbox_items.created_at - events.created_at``) and the
   POST response time.
3. ``w2``: W2 fan-out: ``--fanout-subscribers`` (1,000,000) subscriptions COPYed into
   ``subscriptions`` (then ANALYZE; not timed), one topic event, time from the POST to
   the last inbox row.

For every run: CPU used over the measured interval by each Tidings process, by the
PostgreSQL backends of the run's database (the script's own poller apart), by
nats-server, by redis-server, by this client, and by the whole machine ("rest" is what
none of these used: other people's work on the shared cores). ``--profile DIR`` adds one
run of ``--profile-topology`` (default ``js-2w``) after W1's and W2's measured runs, not in
the medians, with py-spy on every Tidings process (``.venv/bin/pip install py-spy``) and
``pg_stat_activity`` sampled every 20 ms, summarised by ``profile_summary.py``.

    # smoke test, small sizes
    .venv/bin/python bench/scale_out.py --runs 1 --events 5000 --seconds 5 \
        --fanout-subscribers 20000
    .venv/bin/python bench/scale_out.py --only w1 --only latency --runs 3 --profile /tmp/prof
    .venv/bin/python bench/scale_out.py --only w2 --runs 2
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import importlib.metadata
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    BIN,
    PG_HOST,
    PG_PORT,
    PG_USER,
    ROOT,
    TIDINGS,
    CpuMeter,
    Deployment,
    PgCpu,
    RawConnection,
    Zipf,
    cmdline,
    comment_event,
    cpu_seconds,
    free_port,
    install_uvloop,
    machine_line,
    percentile,
    pids_named,
    pyspy,
    stop_process,
    work_tree_line,
)
from pg_activity import PgActivity
from profile_summary import summarize

W1_TOTAL = 100_000
W2_TOTAL = 1_000_000
LOCK_CLASS = 7413  # tidings.kit.partitions._LOCK_CLASS: the workers' partition locks
STAGES = 2  # plan, deliver
LANES = 4


# ---------------------------------------------------------------------------- topologies


@dataclass(frozen=True)
class Topology:
    key: str
    label: str
    queue: str  # "database" | "jetstream"
    serve: bool  # one `tidings serve` instead of api + workers
    workers: int
    scheduler: bool


TOPOLOGIES = {
    t.key: t
    for t in (
        Topology("serve-db", "`tidings serve` alone, database queue", "database", True, 0, False),
        Topology("db-1w", "api + 1 worker, database queue (a)", "database", False, 1, False),
        Topology("js-1w", "api + 1 worker + scheduler, JetStream (b)", "jetstream", False, 1, True),
        Topology(
            "js-2w", "api + 2 workers + scheduler, JetStream (c)", "jetstream", False, 2, True
        ),
    )
}
REFERENCE = "db-1w"


class NatsServer:
    """A single-node nats-server with JetStream of our own, or the one at ``url``."""

    def __init__(self, url: str | None) -> None:
        self.own = url is None
        self.proc: subprocess.Popen[bytes] | None = None
        self.dir: Path | None = None
        if url is None:
            self.port = free_port()
            self.url = f"nats://127.0.0.1:{self.port}"
        else:
            self.url = url
            self.port = int(url.rsplit(":", 1)[1])
        self.pid = 0
        self.version = ""

    def start(self) -> None:
        exe = shutil.which("nats-server", path=str(BIN)) or "nats-server"
        if self.own:
            self.dir = Path(tempfile.mkdtemp(prefix="tidings-bench-nats-"))
            log = open(self.dir / "nats.log", "ab")  # noqa: SIM115
            self.proc = subprocess.Popen(
                [exe, "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", str(self.dir / "js")],
                stdout=log,
                stderr=log,
            )
            self.pid = self.proc.pid
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                with (
                    contextlib.suppress(OSError),
                    socket.create_connection(("127.0.0.1", self.port), 0.5),
                ):
                    break
                if self.proc.poll() is not None:
                    raise RuntimeError(f"nats-server exited:\n{self.log_tail()}")
                time.sleep(0.1)
            self.version = _nats_version(exe)
        else:
            # The machine's: the nats-server whose command line names this port, else the
            # only one there is.
            found = pids_named("nats-server")
            mine = [p for p in found if f"-p {self.port}" in cmdline(p)] or found
            self.pid = mine[0] if len(mine) == 1 else 0
            binary = cmdline(self.pid).split(" ")[0] if self.pid else exe
            self.version = _nats_version(binary) + (
                "" if self.pid else " (its pid was not found: its CPU is not reported)"
            )

    def log_tail(self, lines: int = 30) -> str:
        if self.dir is None:
            return ""
        with contextlib.suppress(OSError):
            text = (self.dir / "nats.log").read_text(errors="replace")
            return "\n".join(text.splitlines()[-lines:])
        return ""

    def stop(self) -> None:
        stop_process(self.proc)
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)


def _nats_version(exe: str) -> str:
    done = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False)
    return (done.stdout or done.stderr).strip()


@dataclass
class Proc:
    name: str
    proc: subprocess.Popen[bytes]
    ready_url: str
    log: Path


class Cluster:
    """One topology on a fresh database: its processes, streams and Redis keys."""

    def __init__(self, topo: Topology, nats: NatsServer, args: argparse.Namespace) -> None:
        self.topo = topo
        self.nats = nats
        self.args = args
        self.d = Deployment("postgres", worker=topo.serve)
        tag = uuid.uuid4().hex[:10]
        self.nats_prefix = f"bench_{tag}"
        self.redis_prefix = f"tidings-bench-{tag}"
        self.d.env.update(TIDINGS_QUEUE_BACKEND=topo.queue)
        if topo.queue == "jetstream":
            self.d.env.update(
                TIDINGS_NATS_URL=nats.url,
                TIDINGS_NATS_PREFIX=self.nats_prefix,
                TIDINGS_NATS_PARTITIONS=str(args.partitions),
                TIDINGS_COUNTERS_BACKEND="redis",
                TIDINGS_REDIS_URL=args.redis_url,
                TIDINGS_REDIS_PREFIX=self.redis_prefix,
                TIDINGS_LIVE_BACKEND="nats",
            )
        self.procs: list[Proc] = []

    @property
    def db_name(self) -> str:
        assert self.d.pg_name is not None
        return self.d.pg_name

    def __enter__(self) -> Cluster:
        self.d.__enter__()
        try:
            self.start()
        except BaseException:
            self.print_logs()
            self.close()
            raise
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is not None:
            self.print_logs()
        self.close()

    def _spawn(self, name: str, argv: Sequence[str], env: dict[str, str], ready_url: str) -> None:
        log_path = self.d.data_dir / f"{name}.log"
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(list(argv), env=env, cwd=ROOT, stdout=log, stderr=log)
        self.procs.append(Proc(name, proc, ready_url, log_path))

    def start(self) -> None:
        base = self.d.base_url
        if self.topo.serve:
            self._spawn("serve", [TIDINGS, "serve"], self.d.env, f"{base}/readyz")
        else:
            self._spawn("api", [TIDINGS, "api"], self.d.env, f"{base}/readyz")
            for i in range(1, self.topo.workers + 1):
                port = free_port()
                self._spawn(
                    f"worker-{i}",
                    [TIDINGS, "worker", "--health-port", str(port)],
                    self.d.env,
                    f"http://127.0.0.1:{port}/readyz",
                )
            if self.topo.scheduler:
                port = free_port()
                self._spawn(
                    "scheduler",
                    [TIDINGS, "scheduler", "--health-port", str(port)],
                    self.d.env,
                    f"http://127.0.0.1:{port}/readyz",
                )
        for p in self.procs:
            wait_ready(p, 90.0)
        if self.topo.queue == "jetstream":
            asyncio.run(self.wait_balanced())

    async def wait_balanced(self, timeout: float = 30.0) -> None:
        """Until every worker holds its even share of the partitions' locks."""
        n = self.topo.workers
        share = -(-self.args.partitions // n) * STAGES * LANES
        total = self.args.partitions * STAGES * LANES
        conn = await asyncpg.connect(
            host=PG_HOST, port=PG_PORT, user=PG_USER, database=self.db_name
        )
        counts: list[int] = []
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                rows = await conn.fetch(
                    "SELECT pid, count(*) AS n FROM pg_locks WHERE locktype = 'advisory'"
                    " AND classid = $1 AND granted AND database ="
                    " (SELECT oid FROM pg_database WHERE datname = current_database())"
                    " GROUP BY pid",
                    LOCK_CLASS,
                )
                counts = sorted(int(r["n"]) for r in rows)
                if len(counts) == n and sum(counts) == total and max(counts) <= share:
                    return
                await asyncio.sleep(0.25)
        finally:
            await conn.close()
        print(f"  warning: partitions not balanced after {timeout:.0f} s: locks {counts}")

    def pids(self) -> dict[str, int]:
        return {p.name: p.proc.pid for p in self.procs}

    def check_alive(self) -> None:
        for p in self.procs:
            if p.proc.poll() is not None:
                raise RuntimeError(f"{p.name} exited with {p.proc.returncode}")

    def print_logs(self, lines: int = 25) -> None:
        for p in self.procs:
            with contextlib.suppress(OSError):
                text = p.log.read_text(errors="replace").splitlines()
                print(f"---- {p.name} log ({p.log}), last {lines} lines:")
                print("\n".join(text[-lines:]) or "(empty)")
        if self.nats.own:
            print(f"---- nats-server log, last {lines} lines:\n{self.nats.log_tail(lines)}")
        if self.args.keep_logs:
            print(f"---- logs kept in {self.args.keep_logs}/{self.topo.key}-{self.nats_prefix}")

    def stop_processes(self) -> None:
        # The API first (nothing new comes in), then the workers, the scheduler last.
        for p in self.procs:
            stop_process(p.proc)

    def close(self) -> None:
        self.stop_processes()
        if self.args.keep_logs:
            keep = Path(self.args.keep_logs) / f"{self.topo.key}-{self.nats_prefix}"
            keep.mkdir(parents=True, exist_ok=True)
            for p in self.procs:
                with contextlib.suppress(OSError):
                    shutil.copy(p.log, keep / p.log.name)
        if self.topo.queue == "jetstream":
            with contextlib.suppress(Exception):
                asyncio.run(self._delete_streams_and_keys())
        self.d.cleanup()

    async def _delete_streams_and_keys(self) -> None:
        import nats
        from nats.js.errors import NotFoundError

        nc = await nats.connect(self.nats.url, connect_timeout=5)
        try:
            js = nc.jetstream()
            for stage in ("plan", "deliver", "dead"):
                with contextlib.suppress(NotFoundError):
                    await js.delete_stream(f"{self.nats_prefix}_{stage}".upper())
        finally:
            await nc.close()
        from redis import asyncio as aioredis

        client = aioredis.from_url(self.args.redis_url)
        try:
            keys = [k async for k in client.scan_iter(match=f"{self.redis_prefix}:*", count=1000)]
            for start in range(0, len(keys), 1000):
                await client.delete(*keys[start : start + 1000])
        finally:
            await client.aclose()


def wait_ready(p: Proc, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if p.proc.poll() is not None:
            raise RuntimeError(f"{p.name} exited with {p.proc.returncode} before it was ready")
        with contextlib.suppress(httpx.HTTPError):
            response = httpx.get(p.ready_url, timeout=2.0)
            if response.status_code == 200:
                return
            last = response.text[:300]
        time.sleep(0.2)
    raise RuntimeError(f"{p.name}: {p.ready_url} not ready within {timeout:.0f} s ({last})")


# ---------------------------------------------------------------------------- CPU


@dataclass
class Cpu:
    """Percent of one core per name over the measured interval."""

    pct: dict[str, float] = field(default_factory=dict)
    machine_busy: float = 0.0  # percent of the whole machine (all cores)

    def describe(self) -> str:
        parts = [f"{k} {v:.0f} %" for k, v in self.pct.items()]
        parts.append(f"machine {self.machine_busy:.0f} % busy of {os.cpu_count()} cores")
        return "CPU (% of one core): " + ", ".join(parts)


class Meter:
    """CPU of the cluster's processes, nats-server, redis-server, this client, the
    database's backends (less the poller's), and the machine."""

    def __init__(self, cl: Cluster, poller_pid: int, redis_pid: int) -> None:
        pids = dict(cl.pids())
        if cl.topo.queue == "jetstream" and cl.nats.pid:
            pids["nats-server"] = cl.nats.pid
        if cl.topo.queue == "jetstream" and redis_pid:
            pids["redis-server"] = redis_pid
        pids["client"] = os.getpid()
        self.meter = CpuMeter(pids)
        self.pg = PgCpu(cl.db_name)
        self.poller_pid = poller_pid
        self._poller0 = 0.0

    async def start(self) -> None:
        await self.pg.start()
        self._poller0 = cpu_seconds(self.poller_pid)
        self.meter.start()

    async def stop(self) -> Cpu:
        self.meter.stop()
        poller = cpu_seconds(self.poller_pid) - self._poller0
        await self.pg.stop()
        wall = self.meter.wall
        pct = {k: v / wall * 100 for k, v in self.meter.used.items()}
        pct["postgres backends"] = max(0.0, self.pg.seconds - poller) / wall * 100
        pct["poller backend"] = poller / wall * 100
        cores = os.cpu_count() or 1
        machine = self.meter.machine_busy * 100
        pct["rest of machine"] = max(0.0, machine * cores - sum(pct.values()))
        return Cpu(pct, machine)


class Profiler:
    """py-spy on every Tidings process and ``pg_stat_activity`` sampled every 20 ms, over
    the measured interval of a run that is not in the medians."""

    def __init__(self, cl: Cluster, folder: Path, label: str, rate: int = 100) -> None:
        self.cl = cl
        self.folder = folder / f"{label}-{cl.topo.key}"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.rate = rate
        self.stack = contextlib.ExitStack()
        self.activity = PgActivity(cl.db_name)
        self.t0 = 0.0
        self.wall = 0.0

    async def start(self) -> None:
        for name, pid in self.cl.pids().items():
            self.stack.enter_context(pyspy(pid, self.folder / f"{name}.txt", rate=self.rate))
        await self.activity.start()
        self.t0 = time.perf_counter()

    async def stop(self) -> None:
        self.wall = time.perf_counter() - self.t0
        await self.activity.stop()
        self.stack.close()

    def report(self) -> str:
        out = [f"profiles in {self.folder}"]
        for name in self.cl.pids():
            path = self.folder / f"{name}.txt"
            if path.exists():
                text = summarize(path.read_text(), rate=self.rate, duration=self.wall, top=15)
                out.append(f"\n---- {name}\n{text}")
        out.append("\n---- PostgreSQL\n" + self.activity.report(top=20))
        report = "\n".join(out)
        (self.folder / "summary.txt").write_text(report)
        return report


def redis_server_pid() -> int:
    found = pids_named("redis-server")
    return found[0] if found else 0


# ---------------------------------------------------------------------------- W1


@dataclass
class W1Result:
    rate: float
    ingest_rate: float
    seconds: float
    rows_at_ingest_end: int
    cpu: Cpu


def w1_bodies(args: argparse.Namespace, tag: str) -> list[bytes]:
    rng = random.Random(args.seed)
    recipients = Zipf(args.users, 1.1, rng).sample(args.events)
    actors = [rng.randrange(1, args.users + 1) for _ in range(args.events)]
    events = [
        comment_event(f"{tag}-{i}", f"u-{r}", a, i)
        for i, (r, a) in enumerate(zip(recipients, actors, strict=True))
    ]
    return [orjson.dumps({"events": events[i : i + 500]}) for i in range(0, len(events), 500)]


async def poller_connection(db_name: str) -> tuple[asyncpg.Connection, int]:
    conn = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, database=db_name)
    await conn.execute("SET max_parallel_workers_per_gather = 0")
    return conn, int(await conn.fetchval("SELECT pg_backend_pid()"))


async def warm_up(cl: Cluster, client: httpx.AsyncClient, conn: asyncpg.Connection) -> int:
    """One small batch through the whole pipeline; returns the inbox rows afterwards."""
    warm = [comment_event(f"warm-{uuid.uuid4().hex}-{i}", f"u-warm-{i}", 1, i) for i in range(8)]
    response = await client.post("/v1/events/batch", content=orjson.dumps({"events": warm}))
    response.raise_for_status()
    deadline = time.monotonic() + 60
    while (count := await conn.fetchval("SELECT count(*) FROM inbox_items")) < len(warm):
        if time.monotonic() > deadline:
            raise RuntimeError("the warm-up events reached no inbox within 60 s")
        cl.check_alive()
        await asyncio.sleep(0.05)
    return int(count)


async def w1_measure(
    cl: Cluster, bodies: list[bytes], args: argparse.Namespace, profile: Profiler | None = None
) -> W1Result:
    headers = {"Authorization": f"Bearer {cl.d.key}", "Content-Type": "application/json"}
    conn, poller_pid = await poller_connection(cl.db_name)
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=64)
    async with httpx.AsyncClient(
        base_url=cl.d.base_url, headers=headers, limits=limits, timeout=300
    ) as client:
        baseline = await warm_up(cl, client, conn)
        target = baseline + args.events
        meter = Meter(cl, poller_pid, redis_server_pid())
        if profile:
            await profile.start()
        await meter.start()
        pending = list(reversed(bodies))
        ingest_done = 0.0
        t0 = time.perf_counter()

        async def sender() -> None:
            nonlocal ingest_done
            while pending:
                response = await client.post("/v1/events/batch", content=pending.pop())
                if response.status_code != 202:
                    raise RuntimeError(
                        f"batch answered {response.status_code}: {response.text[:300]}"
                    )
                ingest_done = max(ingest_done, time.perf_counter())

        senders = [asyncio.create_task(sender()) for _ in range(args.concurrency)]
        rows_at_ingest_end = -1
        last, last_progress = baseline, time.perf_counter()
        try:
            while True:
                count = int(await conn.fetchval("SELECT count(*) FROM inbox_items"))
                now = time.perf_counter()
                if rows_at_ingest_end < 0 and all(s.done() for s in senders):
                    for s in senders:
                        s.result()
                    rows_at_ingest_end = count - baseline
                if count >= target:
                    t_last = now
                    break
                if count > last:
                    last, last_progress = count, now
                elif now - last_progress > args.stall_timeout:
                    raise RuntimeError(
                        f"no new inbox rows for {args.stall_timeout:.0f} s at "
                        f"{count - baseline:,}/{args.events:,}"
                    )
                cl.check_alive()
                near = count - baseline >= 0.9 * args.events
                await asyncio.sleep(0.02 if near else 0.5)
        finally:
            for s in senders:
                s.cancel()
            await asyncio.gather(*senders, return_exceptions=True)
        cpu = await meter.stop()
        if profile:
            await profile.stop()
    await conn.close()
    return W1Result(
        rate=args.events / (t_last - t0),
        ingest_rate=args.events / (ingest_done - t0),
        seconds=t_last - t0,
        rows_at_ingest_end=rows_at_ingest_end if rows_at_ingest_end >= 0 else args.events,
        cpu=cpu,
    )


# ---------------------------------------------------------------------------- latency


@dataclass
class LatencyResult:
    accepted: int
    seen: int
    achieved_rate: float
    row_ms: list[float]  # client: 202 received -> row seen by the 10 ms poller
    stamp_ms: list[float]  # server stamps: inbox_items.created_at - events.created_at
    post_ms: list[float]
    wait_ms_max: float
    cpu: Cpu


async def latency_measure(cl: Cluster, args: argparse.Namespace) -> LatencyResult:
    host, port = "127.0.0.1", cl.d.port
    headers = {"Authorization": f"Bearer {cl.d.key}", "Content-Type": "application/json"}
    conn, poller_pid = await poller_connection(cl.db_name)
    rng = random.Random(args.seed)
    total = int(args.rate * args.seconds)
    tag = uuid.uuid4().hex[:10]
    users = [f"u-{r}" for r in Zipf(args.users, 1.1, rng).sample(total)]
    bodies = [
        (users[i], orjson.dumps(comment_event(f"{tag}-{i}", users[i], 1, i))) for i in range(total)
    ]
    async with httpx.AsyncClient(base_url=cl.d.base_url, headers=headers, timeout=60) as client:
        await warm_up(cl, client, conn)

    pending: dict[str, tuple[str, float]] = {}  # event id -> (user, accepted at)
    row_ms: list[float] = []
    post_ms: list[float] = []
    waits_ms: list[float] = []
    failures: list[str] = []
    queue: asyncio.Queue[tuple[float, str, bytes] | None] = asyncio.Queue()
    measuring = False

    async def publisher() -> None:
        raw = RawConnection(host, port)
        try:
            while (item := await queue.get()) is not None:
                due, user, body = item
                start = time.perf_counter()
                try:
                    status, payload = await raw.request("POST", "/v1/events", body, headers)
                except (OSError, ConnectionError, asyncio.IncompleteReadError) as exc:
                    failures.append(repr(exc))
                    await raw.close()
                    continue
                accepted = time.perf_counter()
                if status != 202:
                    failures.append(f"{status} {payload[:200]!r}")
                    continue
                if measuring:
                    waits_ms.append((start - due) * 1000)
                    post_ms.append((accepted - start) * 1000)
                pending[orjson.loads(payload)["event_id"]] = (user, accepted)
        finally:
            await raw.close()

    stop_polling = asyncio.Event()

    async def poller() -> None:
        while not stop_polling.is_set():
            if pending:
                snapshot = dict(pending)
                asked = time.perf_counter()
                rows = await conn.fetch(
                    "SELECT event_id FROM inbox_items WHERE user_id = ANY($1::text[])"
                    " AND event_id = ANY($2::text[])",
                    list({u for u, _ in snapshot.values()}),
                    list(snapshot),
                )
                for row in rows:
                    found = pending.pop(row["event_id"], None)
                    if found is not None and measuring:
                        row_ms.append((asked - found[1]) * 1000)
            await asyncio.sleep(args.poll_ms / 1000)

    publishers = [asyncio.create_task(publisher()) for _ in range(args.connections)]
    polling = asyncio.create_task(poller())
    # Warm-up of the publishers' connections and the single-event path; not measured.
    for i in range(2 * args.connections):
        warm = orjson.dumps(comment_event(f"warm-{tag}-{i}", "u-warm-0", 1, i))
        queue.put_nowait((time.perf_counter(), "u-warm-0", warm))
    deadline = time.monotonic() + 60
    while (pending or not queue.empty()) and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)
    pending.clear()

    measuring = True
    meter = Meter(cl, poller_pid, redis_server_pid())
    await meter.start()
    t0 = time.perf_counter()
    for i, (user, body) in enumerate(bodies):
        due = t0 + i / args.rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait((due, user, body))
    t_end = time.perf_counter()
    for _ in publishers:
        queue.put_nowait(None)
    await asyncio.gather(*publishers)
    deadline = time.monotonic() + args.grace
    while pending and time.monotonic() < deadline:
        cl.check_alive()
        await asyncio.sleep(0.05)
    cpu = await meter.stop()
    stop_polling.set()
    await polling
    missing = len(pending)
    if failures:
        print(f"  {len(failures)} POSTs failed, e.g. {failures[0]}")
    if missing:
        print(f"  {missing} accepted events had no inbox row after {args.grace:.0f} s")
    rows = await conn.fetch(
        "SELECT extract(epoch FROM i.created_at - e.created_at) * 1000 AS ms"
        " FROM inbox_items i JOIN events e ON e.id = i.event_id"
        " WHERE e.idempotency_key LIKE $1 AND e.idempotency_key NOT LIKE 'warm-%'",
        f"{tag}-%",
    )
    await conn.close()
    return LatencyResult(
        accepted=len(post_ms),
        seen=len(row_ms),
        achieved_rate=total / (t_end - t0),
        row_ms=row_ms,
        stamp_ms=[float(r["ms"]) for r in rows],
        post_ms=post_ms,
        wait_ms_max=max(waits_ms, default=0.0),
        cpu=cpu,
    )


def pcts(values: Sequence[float]) -> str:
    if not values:
        return "none"
    return (
        f"p50 {percentile(values, 50):6.1f}  p95 {percentile(values, 95):6.1f}  "
        f"p99 {percentile(values, 99):6.1f}  max {max(values):7.1f} ms"
    )


# ---------------------------------------------------------------------------- W2


@dataclass
class W2Result:
    subscribers: int
    seconds: float
    first_row_s: float
    half_s: float
    rate: float
    copy_seconds: float
    count_ms: float  # how long the last count(*) took (the poller's own cost)
    cpu: Cpu


TOPIC = "bench-fanout"


async def w2_measure(
    cl: Cluster, args: argparse.Namespace, profile: Profiler | None = None
) -> W2Result:
    n = args.fanout_subscribers
    headers = {"Authorization": f"Bearer {cl.d.key}", "Content-Type": "application/json"}
    conn, poller_pid = await poller_connection(cl.db_name)
    async with httpx.AsyncClient(base_url=cl.d.base_url, headers=headers, timeout=120) as client:
        baseline = await warm_up(cl, client, conn)
        # Subscribers straight into the users package's table (not timed).
        t_copy = time.perf_counter()
        now = dt.datetime.now(dt.UTC)
        await conn.execute(
            "INSERT INTO topics (key, created_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            TOPIC,
            now,
        )
        width = len(str(n))
        await conn.copy_records_to_table(
            "subscriptions",
            records=((TOPIC, f"f-{i:0{width}d}", now) for i in range(n)),
            columns=["topic", "user_id", "created_at"],
        )
        await conn.execute("ANALYZE subscriptions")
        copy_seconds = time.perf_counter() - t_copy
        target = baseline + n
        meter = Meter(cl, poller_pid, redis_server_pid())
        if profile:
            await profile.start()
        await meter.start()
        event = comment_event(f"fanout-{uuid.uuid4().hex}", "unused", 1, 1)
        event.pop("recipients")
        event["topic"] = TOPIC
        t0 = time.perf_counter()
        response = await client.post("/v1/events", content=orjson.dumps(event))
        if response.status_code != 202:
            raise RuntimeError(f"topic event answered {response.status_code}: {response.text}")
    first = half = 0.0
    last, last_progress = baseline, time.perf_counter()
    count_ms = 0.0
    while True:
        asked = time.perf_counter()
        count = int(await conn.fetchval("SELECT count(*) FROM inbox_items"))
        now_t = time.perf_counter()
        count_ms = (now_t - asked) * 1000
        done = count - baseline
        if done > 0 and not first:
            first = asked - t0
        if done >= n / 2 and not half:
            half = asked - t0
        if count >= target:
            t_last = asked
            break
        if count > last:
            last, last_progress = count, now_t
        elif now_t - last_progress > args.stall_timeout:
            raise RuntimeError(
                f"no new inbox rows for {args.stall_timeout:.0f} s at {done:,}/{n:,}"
            )
        cl.check_alive()
        # count(*) of a million rows is not free: poll coarsely until the end is near.
        await asyncio.sleep(0.1 if done >= 0.97 * n else 1.0)
    cpu = await meter.stop()
    if profile:
        await profile.stop()
    await conn.close()
    seconds = t_last - t0
    return W2Result(n, seconds, first, half, n / seconds, copy_seconds, count_ms, cpu)


# ---------------------------------------------------------------------------- reporting


def rotate(items: Sequence[str], run: int) -> list[str]:
    k = (run - 1) % len(items)
    return list(items[k:]) + list(items[:k])


def rng_text(values: Sequence[float], fmt: str = "{:,.0f}") -> str:
    """'median (min-max, ±x %)' (an en dash between min and max)."""
    if not values:
        return "n/a"
    med = statistics.median(values)
    spread = (max(values) - min(values)) / 2 / med * 100 if med else 0.0
    low, high = fmt.format(min(values)), fmt.format(max(values))
    return f"{fmt.format(med)} ({low}\u2013{high}, ±{spread:.0f} %)"


def cpu_medians(cpus: Sequence[Cpu]) -> str:
    names: list[str] = []
    for c in cpus:
        names += [k for k in c.pct if k not in names]
    parts = [
        f"{k} {statistics.median(c.pct.get(k, 0.0) for c in cpus):.0f}"
        for k in names
        if k != "poller backend"
    ]
    busy = statistics.median(c.machine_busy for c in cpus)
    return ", ".join(parts) + f"; machine {busy:.0f} % busy"


def run_repeated(
    what: str,
    keys: Sequence[str],
    args: argparse.Namespace,
    nats: NatsServer,
    measure: Callable[[Cluster], Any],
    describe: Callable[[Any], str],
) -> dict[str, list[tuple[int, Any]]]:
    results: dict[str, list[tuple[int, Any]]] = {k: [] for k in keys}
    for run in range(1, args.runs + 1):
        for key in rotate(keys, run):
            topo = TOPOLOGIES[key]
            started = time.strftime("%H:%M:%S")
            try:
                with Cluster(topo, nats, args) as cl:
                    result = measure(cl)
            except Exception as exc:
                print(f"{what} run {run} {key}: FAILED at {started}: {exc}", flush=True)
                if args.fail_fast:
                    raise
                continue
            results[key].append((run, result))
            print(f"{what} run {run} {key} (from {started}): {describe(result)}", flush=True)
    return results


def profiled_run(
    what: str,
    args: argparse.Namespace,
    nats: NatsServer,
    measure: Callable[[Cluster, Profiler], Any],
    describe: Callable[[Any], str],
) -> None:
    """One more run of ``--profile-topology`` under py-spy and pg_stat_activity sampling."""
    topo = TOPOLOGIES[args.profile_topology]
    with Cluster(topo, nats, args) as cl:
        profile = Profiler(cl, Path(args.profile), what.lower())
        result = measure(cl, profile)
    print(f"\n{what} profiled run {topo.key} (not in the medians): {describe(result)}")
    print(profile.report(), flush=True)


def ratios(
    results: dict[str, list[tuple[int, Any]]], key: str, value: Callable[[Any], float]
) -> list[float]:
    ref = dict(results.get(REFERENCE, []))
    return [value(r) / value(ref[run]) for run, r in results[key] if run in ref]


def report_w1(results: dict[str, list[tuple[int, W1Result]]]) -> None:
    print("\nW1 summary (medians over runs; ratios against api + 1 worker, database queue)")
    print(
        "| topology | events/s to inbox rows | ratio to (a) | ingest events/s "
        "| CPU, % of one core |"
    )
    print("|---|---|---|---|---|")
    for key, runs in results.items():
        if not runs:
            continue
        rs = [r for _, r in runs]
        ratio = ratios(results, key, lambda r: r.rate) if key != REFERENCE else []
        print(
            f"| {TOPOLOGIES[key].label} | {rng_text([r.rate for r in rs])} "
            f"| {rng_text(ratio, '{:.2f}') if ratio else '1'} "
            f"| {rng_text([r.ingest_rate for r in rs])} | {cpu_medians([r.cpu for r in rs])} |"
        )
    for key, runs in results.items():
        for run, r in runs:
            print(
                f"  {key} run {run}: {r.rate:,.0f}/s over {r.seconds:.1f} s; rows at ingest "
                f"end {r.rows_at_ingest_end:,}; {r.cpu.describe()}"
            )


def report_latency(results: dict[str, list[tuple[int, LatencyResult]]]) -> None:
    print("\nLatency summary: medians over runs of each run's percentile (ms)")
    print(
        "| topology | accept → row seen p50 / p95 / p99 / max | server stamps p50 / p99 "
        "| POST answered p50 / p99 | CPU, % of one core |"
    )
    print("|---|---|---|---|---|")
    for key, runs in results.items():
        if not runs:
            continue
        rs = [r for _, r in runs]

        def med(
            pick: Callable[[LatencyResult], list[float]],
            q: float,
            rs: list[LatencyResult] = rs,
        ) -> str:
            vals = [percentile(pick(r), q) if q <= 100 else max(pick(r)) for r in rs if pick(r)]
            return f"{statistics.median(vals):,.0f}" if vals else "n/a"

        p99s = [percentile(r.row_ms, 99) for r in rs if r.row_ms]
        print(
            f"| {TOPOLOGIES[key].label} | {med(lambda r: r.row_ms, 50)} / "
            f"{med(lambda r: r.row_ms, 95)} / **{med(lambda r: r.row_ms, 99)}** / "
            f"{med(lambda r: r.row_ms, 101)} (p99 {rng_text(p99s)}) "
            f"| {med(lambda r: r.stamp_ms, 50)} / {med(lambda r: r.stamp_ms, 99)} "
            f"| {med(lambda r: r.post_ms, 50)} / {med(lambda r: r.post_ms, 99)} "
            f"| {cpu_medians([r.cpu for r in rs])} |"
        )


def report_w2(results: dict[str, list[tuple[int, W2Result]]]) -> None:
    print("\nW2 summary (medians over runs)")
    print(
        "| topology | subscribers | POST → last inbox row | inbox rows/s | rate ratio to (a) "
        "| first row / half "
        "| CPU, % of one core |"
    )
    print("|---|---|---|---|---|---|---|")
    for key, runs in results.items():
        if not runs:
            continue
        rs = [r for _, r in runs]
        ratio = ratios(results, key, lambda r: r.rate) if key != REFERENCE else []
        print(
            f"| {TOPOLOGIES[key].label} | {rs[0].subscribers:,} "
            f"| {rng_text([r.seconds for r in rs], '{:,.1f}')} s "
            f"| {rng_text([r.rate for r in rs])} "
            f"| {rng_text(ratio, '{:.2f}') if ratio else '1'} "
            f"| {statistics.median(r.first_row_s for r in rs):.1f} s / "
            f"{statistics.median(r.half_s for r in rs):.1f} s "
            f"| {cpu_medians([r.cpu for r in rs])} |"
        )


def versions(nats: NatsServer, redis_url: str) -> str:
    async def servers() -> tuple[str, str]:
        conn = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, database="postgres")
        try:
            pg = await conn.fetchval("SHOW server_version")
            settings = await conn.fetch(
                "SELECT name, setting FROM pg_settings WHERE name IN "
                "('autovacuum', 'synchronous_commit', 'shared_buffers', 'max_connections')"
            )
        finally:
            await conn.close()
        from redis import asyncio as aioredis

        client = aioredis.from_url(redis_url)
        try:
            info = await client.info("server")
        finally:
            await client.aclose()
        text = ", ".join(f"{r['name']}={r['setting']}" for r in settings)
        return f"PostgreSQL {pg} ({text})", f"Redis {info.get('redis_version')}"

    pg, redis = asyncio.run(servers())
    packages = ", ".join(
        f"{name} {importlib.metadata.version(name)}"
        for name in (
            "nats-py",
            "redis",
            "hiredis",
            "asyncpg",
            "SQLAlchemy",
            "uvicorn",
            "uvloop",
            "fastapi",
            "orjson",
        )
    )
    where = "own single node" if nats.own else f"the machine's, {nats.url}"
    return (
        f"Python {sys.version.split()[0]}; {pg}; {redis}; NATS {nats.version} ({where}); {packages}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", choices=["w1", "latency", "w2"], action="append")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--events", type=int, default=W1_TOTAL, help="W1 events per run")
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=4, help="W1 batches in flight")
    parser.add_argument(
        "--topologies",
        default="serve-db,db-1w,js-1w,js-2w",
        help=f"W1's topologies, comma-separated, of {', '.join(TOPOLOGIES)}",
    )
    parser.add_argument("--rate", type=float, default=200.0, help="latency: events/s")
    parser.add_argument("--seconds", type=float, default=30.0, help="latency: seconds")
    parser.add_argument("--latency-topologies", default="db-1w,js-2w")
    parser.add_argument("--connections", type=int, default=128, help="latency: publishers")
    parser.add_argument("--poll-ms", type=float, default=10.0, help="latency: row poll period")
    parser.add_argument("--grace", type=float, default=30.0, help="latency: wait for stragglers")
    parser.add_argument("--fanout-subscribers", type=int, default=W2_TOTAL)
    parser.add_argument("--w2-topologies", default="db-1w,js-2w")
    parser.add_argument("--partitions", type=int, default=8, help="TIDINGS_NATS_PARTITIONS")
    parser.add_argument(
        "--nats-url", help="use this NATS server (e.g. the machine's) instead of one of our own"
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--stall-timeout", type=float, default=120.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep-logs", metavar="DIR", help="copy every run's process logs here")
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="after W1's and W2's measured runs, one more run of --profile-topology with "
        "py-spy on every Tidings process and pg_stat_activity sampled; raw profiles to DIR",
    )
    parser.add_argument("--profile-topology", default="js-2w", choices=list(TOPOLOGIES))
    parser.add_argument("--fail-fast", action="store_true")
    args = parser.parse_args()
    only = args.only or ["w1", "latency", "w2"]
    install_uvloop()

    nats = NatsServer(args.nats_url)
    nats.start()
    try:
        print(f"machine: {machine_line()}")
        print(work_tree_line())
        print(f"versions: {versions(nats, args.redis_url)}")
        print(f"NATS partitions {args.partitions}, runs {args.runs}", flush=True)
        if "w1" in only:
            keys = [k.strip() for k in args.topologies.split(",") if k.strip()]
            print(
                f"\n== W1: {args.events:,} events, Zipf(1.1) over {args.users:,} users, "
                f"batches of 500, {args.concurrency} in flight; topologies {', '.join(keys)}"
            )

            # Each run has a fresh database: the same bodies (and keys) serve every run.
            bodies = w1_bodies(args, uuid.uuid4().hex[:10])

            def w1(cl: Cluster, profile: Profiler | None = None) -> W1Result:
                return asyncio.run(w1_measure(cl, bodies, args, profile))

            def w1_text(r: W1Result) -> str:
                return (
                    f"{r.rate:,.0f} events/s ({r.seconds:.1f} s), ingest "
                    f"{r.ingest_rate:,.0f}/s; {r.cpu.describe()}"
                )

            report_w1(run_repeated("W1", keys, args, nats, w1, w1_text))
            if args.profile:
                profiled_run("W1", args, nats, w1, w1_text)
        if "latency" in only:
            keys = [k.strip() for k in args.latency_topologies.split(",") if k.strip()]
            print(
                f"\n== Latency (W6 steady): {args.rate:.0f} events/s for {args.seconds:.0f} s, "
                f"single POST /v1/events, {args.connections} connections, row poll every "
                f"{args.poll_ms:.0f} ms; topologies {', '.join(keys)}"
            )
            report_latency(
                run_repeated(
                    "latency",
                    keys,
                    args,
                    nats,
                    lambda cl: asyncio.run(latency_measure(cl, args)),
                    lambda r: (
                        f"{r.accepted:,} accepted at {r.achieved_rate:.0f}/s, {r.seen:,} seen; "
                        f"longest wait for a connection {r.wait_ms_max:.0f} ms\n"
                        f"    accept -> row seen : {pcts(r.row_ms)}\n"
                        f"    server stamps      : {pcts(r.stamp_ms)}\n"
                        f"    POST answered      : {pcts(r.post_ms)}\n    {r.cpu.describe()}"
                    ),
                )
            )
        if "w2" in only:
            keys = [k.strip() for k in args.w2_topologies.split(",") if k.strip()]
            print(
                f"\n== W2: one topic event to {args.fanout_subscribers:,} subscribers; "
                f"topologies {', '.join(keys)}"
            )

            def w2(cl: Cluster, profile: Profiler | None = None) -> W2Result:
                return asyncio.run(w2_measure(cl, args, profile))

            def w2_text(r: W2Result) -> str:
                return (
                    f"{r.seconds:.1f} s to the last row ({r.rate:,.0f} rows/s; first row "
                    f"{r.first_row_s:.1f} s, half {r.half_s:.1f} s; "
                    f"COPY {r.copy_seconds:.1f} s, "
                    f"last count(*) {r.count_ms:.0f} ms); {r.cpu.describe()}"
                )

            report_w2(run_repeated("W2", keys, args, nats, w2, w2_text))
            if args.profile:
                profiled_run("W2", args, nats, w2, w2_text)
    finally:
        nats.stop()


if __name__ == "__main__":
    main()
