"""Soak with faults: the scale-out deployment under steady load while its parts fail.

The script starts, on loopback, everything a production deployment has: a PostgreSQL
server of its own (so that it can restart it), a three-node NATS cluster (JetStream,
streams replicated three times), the machine's Redis, an SMTP server (aiosmtpd, in this
process), and Tidings as two ``tidings api``, two ``tidings worker`` and a ``tidings
scheduler`` process. A separate process publishes ``comment.created`` events at a
steady rate through the Python SDK (its own retries, the same idempotency key on every
try, to whichever API answers). Meanwhile, on a fixed schedule (fractions of the run):

* 0.20: a worker is SIGKILLed and a replacement started;
* 0.35: PostgreSQL is restarted the hard way (``pg_ctl stop -m immediate``, then start);
* 0.50: a NATS node is SIGKILLed; at 0.65 it comes back;
* 0.70 to 0.80: the SMTP server answers every message with ``451 4.3.0``;
* 0.85: the other worker is SIGKILLed and a replacement started.

When the load stops, the script waits (bounded) for the work to drain, then reconciles
every event an API acknowledged against the inbox rows and the messages the SMTP server
accepted, and prints: events sent, acknowledged, delivered, lost (must be 0), in-app
items duplicated (must be 0), emails duplicated (at most one per worker kill: a worker
that dies between the server's acceptance and its commit sends again), the latency from
acceptance to the inbox row (p50, p99 and max) for events accepted during a fault and
for the others, and the resident memory of the API and worker processes at the start
and the end of the run.

    .venv/bin/python bench/soak.py --seconds 600 --rate 100      # ten minutes
    .venv/bin/python bench/soak.py --seconds 60 --no-faults      # a calm baseline

``tests/e2e/test_soak.py`` runs a short version in the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
from aiosmtpd.controller import Controller  # noqa: E402
from aiosmtpd.smtp import SMTP, Envelope, Session  # noqa: E402
from tests.e2e.procs import (  # noqa: E402
    CAPABILITIES,
    Process,
    Processes,
    free_port,
    last_line,
    run_cli,
    tidings_env,
)
from tests.nats_cluster import NatsCluster  # noqa: E402

from tidings.delivery.send_flow import COMMIT_EVERY  # noqa: E402

PG_BIN = Path(os.environ.get("TIDINGS_PG_BIN", "/usr/lib/postgresql/15/bin"))
REDIS_URL = os.environ.get("TIDINGS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
WORKERS = 2
SMTP_POOL = 4
DUPLICATES_PER_KILL = COMMIT_EVERY
"""A killed worker sends again what it handed over and had not recorded yet: at most
``COMMIT_EVERY`` messages."""
IN_FLIGHT = 64
"""Requests the load keeps open at once; an event due while all are busy waits its turn
(and its latency counts from its acceptance, as a client would see it)."""
FAULT_GRACE = 10.0
"""Seconds after a fault during which an accepted event counts as accepted "during" it."""


@dataclass
class SoakConfig:
    seconds: float = 60.0
    rate: float = 50.0
    users: int = 200
    email_share: float = 0.5
    faults: bool = True
    drain_timeout: float = 180.0
    base_dir: Path | None = None


@dataclass
class SoakReport:
    sent: int = 0
    acknowledged: int = 0
    expected_items: int = 0
    delivered_items: int = 0
    lost_items: int = 0
    duplicated_items: int = 0
    expected_emails: int = 0
    delivered_emails: int = 0
    lost_emails: int = 0
    duplicated_emails: int = 0
    smtp_refusals: int = 0
    worker_kills: int = 0
    database_restarts: int = 0
    faults: list[tuple[str, float]] = field(default_factory=list)
    latency_during: list[float] = field(default_factory=list)
    latency_calm: list[float] = field(default_factory=list)
    rss_kib: dict[str, tuple[int, int]] = field(default_factory=dict)
    drained_in: float | None = None
    diagnosis: list[str] = field(default_factory=list)

    @property
    def duplicate_bound(self) -> int:
        """A killed worker, and every worker when the database goes away under it, sends
        again at most ``DUPLICATES_PER_KILL`` messages."""
        return (self.worker_kills + self.database_restarts * WORKERS) * DUPLICATES_PER_KILL

    def lines(self) -> list[str]:
        out = [
            f"events sent              {self.sent}",
            f"events acknowledged      {self.acknowledged}",
            f"inbox items expected     {self.expected_items}",
            f"inbox items delivered    {self.delivered_items}",
            f"inbox items lost         {self.lost_items}",
            f"inbox items duplicated   {self.duplicated_items}",
            f"emails expected          {self.expected_emails}",
            f"emails delivered         {self.delivered_emails}",
            f"emails lost              {self.lost_emails}",
            f"emails duplicated        {self.duplicated_emails} "
            f"(bound: {self.duplicate_bound} = ({self.worker_kills} worker kills + "
            f"{self.database_restarts} database restarts x {WORKERS} workers) x "
            f"{DUPLICATES_PER_KILL})",
            f"SMTP 451 answers         {self.smtp_refusals}",
            "drained after the load   "
            + ("not within the timeout" if self.drained_in is None else f"{self.drained_in:.1f} s"),
        ]
        for name, values in (("during faults", self.latency_during), ("calm", self.latency_calm)):
            out.append(f"latency {name:<16} {_percentiles(values)}")
        for name, (start, end) in sorted(self.rss_kib.items()):
            out.append(f"RSS {name:<20} {start / 1024:.1f} MiB -> {end / 1024:.1f} MiB")
        out.append("faults: " + ", ".join(f"{what} at {at:.0f}s" for what, at in self.faults))
        return out + self.diagnosis


def _percentiles(values: list[float]) -> str:
    if not values:
        return "no events"
    ordered = sorted(values)
    p50 = ordered[len(ordered) // 2]
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    p50, p99, top = (round(value * 1000) for value in (p50, p99, ordered[-1]))
    return f"n={len(ordered)} p50 {p50} ms, p99 {p99} ms, max {top} ms"


# -- PostgreSQL of the soak's own ------------------------------------------------------


class OwnPostgres:
    """A throwaway PostgreSQL cluster on a free port, restartable."""

    def __init__(self) -> None:
        # Its own folder under the system's temporary one: a test's tmp_path is private
        # to root, and the server runs as ``postgres`` when this runs as root.
        self.directory = Path(tempfile.mkdtemp(prefix="tidings-soak-pg-"))
        self.data = self.directory / "data"
        self.port = free_port()
        self._as_postgres = os.geteuid() == 0

    def _run(self, *args: str) -> None:
        command = [*args]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def init(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if self._as_postgres:
            shutil.chown(self.directory, "postgres", "postgres")
        self._run(
            str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres",
            "--auth=trust", "--no-sync",
        )  # fmt: skip
        self.start()

    def start(self) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1"
        # fsync off: a crash of the server process (what is simulated) loses nothing the
        # kernel holds; synchronous_commit stays on, or a crash would lose acknowledged
        # commits by design.
        options += " -c max_connections=200 -c fsync=off"
        self._run(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-o", options,
            "-l", str(self.directory / "server.log"), "-w", "start",
        )  # fmt: skip

    def crash_restart(self) -> None:
        """Stop without a checkpoint (as a crash would), then start: recovery replays WAL."""
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        self.start()

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")
        shutil.rmtree(self.directory, ignore_errors=True)

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    async def connect(self) -> asyncpg.Connection:
        return await asyncpg.connect(host="127.0.0.1", port=self.port, user="postgres")


# -- SMTP sink -------------------------------------------------------------------------


class Sink:
    """An SMTP server that keeps what it accepts; ``failing`` makes it answer 451."""

    def __init__(self) -> None:
        self.failing = False
        self.received: Counter[str] = Counter()
        self.first_seen: dict[str, float] = {}
        self.again_at: list[float] = []
        self.refused = 0
        self._lock = threading.Lock()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.failing:
            with self._lock:
                self.refused += 1
            return "451 4.3.0 Mailbox busy, try again later"
        content = envelope.content if isinstance(envelope.content, bytes) else b""
        message_id = str(message_from_bytes(content).get("Message-ID", "")).strip()
        with self._lock:
            self.received[message_id] += 1
            if message_id in self.first_seen:
                self.again_at.append(time.time())
            else:
                self.first_seen[message_id] = time.time()
        return "250 2.0.0 OK"


@contextlib.contextmanager
def smtp_sink() -> Iterator[tuple[Sink, int]]:
    sink = Sink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield sink, port
    finally:
        controller.stop()


# -- the deployment --------------------------------------------------------------------


@dataclass
class Deployment:
    env: dict[str, str]
    processes: Processes
    apis: list[tuple[Process, str]] = field(default_factory=list)
    workers: list[Process] = field(default_factory=list)
    others: list[Process] = field(default_factory=list)

    def start_worker(self, name: str) -> Process:
        worker = self.processes.start(name, ["worker", "--health-port", str(free_port())], self.env)
        self.workers.append(worker)
        return worker


async def _wait_http(url: str, timeout: float = 60.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2.0) as client:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                if (await client.get(url)).status_code == 200:
                    return
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} did not answer 200 within {timeout}s")


@contextlib.asynccontextmanager
async def deployment(
    base: Path, pg: OwnPostgres, nats_urls: list[str], smtp_port: int
) -> AsyncIterator[Deployment]:
    prefix = f"soak{uuid.uuid4().hex[:6]}"
    env = tidings_env(
        base / "data",
        database_url=pg.url,
        queue_backend="jetstream",
        counters_backend="redis",
        live_backend="nats",
        nats_url=",".join(nats_urls),
        nats_prefix=prefix,
        redis_url=REDIS_URL,
        redis_prefix=prefix,
        nats_replicas=3,
        nats_partitions=4,
        nats_ack_wait_seconds=5,
        job_backoff_base_seconds=0.5,
        job_backoff_max_seconds=5,
        job_max_attempts=40,
        email_provider="smtp",
        smtp_host="127.0.0.1",
        smtp_port=smtp_port,
        smtp_pool_size=SMTP_POOL,
        smtp_timeout_seconds=10,
        secret="soak-secret-" + "x" * 32,
        log_level="warning",
    )
    await asyncio.to_thread(run_cli, ["db", "upgrade"], env)
    processes = Processes(base / "logs")
    deployed = Deployment(env, processes)
    try:
        scheduler_port = free_port()
        deployed.others.append(
            processes.start("scheduler", ["scheduler", "--health-port", str(scheduler_port)], env)
        )
        await _wait_http(f"http://127.0.0.1:{scheduler_port}/readyz")
        for n in range(WORKERS):
            deployed.start_worker(f"worker-{n}")
        for n in range(2):
            port = free_port()
            api = processes.start(f"api-{n}", ["api"], {**env, "TIDINGS_PORT": str(port)})
            url = f"http://127.0.0.1:{port}"
            await _wait_http(f"{url}/readyz")
            deployed.apis.append((api, url))
        yield deployed
    finally:
        processes.close()


# -- the load, from another process -----------------------------------------------------


async def _load(
    urls: list[str], key: str, rate: float, seconds: float, users: int, out: Path
) -> None:
    """Publish at ``rate`` for ``seconds``; one JSON line per acknowledged event."""
    from tidings.client import AsyncTidings, Retry, TidingsError

    rng = random.Random(7)
    patient = Retry(attempts=30, base=0.2, cap=2.0)
    clients = [AsyncTidings(url, key, retry=patient, timeout=10.0) for url in urls]
    sent = 0
    pending: set[asyncio.Task[None]] = set()
    with out.open("w") as log:
        in_flight = asyncio.Semaphore(IN_FLIGHT)

        async def publish(n: int, recipients: list[str]) -> None:
            async with in_flight:
                await publish_now(n, recipients)

        async def publish_now(n: int, recipients: list[str]) -> None:
            body = {
                "board": {"id": "b-1", "name": "Roadmap"},
                "comment": {"id": f"c-{n}", "text": f"comment {n}"},
            }
            key_ = f"soak-{n}"
            for turn in range(len(clients) * 3):
                client = clients[(n + turn) % len(clients)]
                try:
                    accepted = await client.publish(
                        "comment.created",
                        recipients=recipients,
                        actor={"id": "u-ann", "name": "Ann"},
                        data=body,
                        idempotency_key=key_,
                    )
                except TidingsError:
                    continue
                line = {
                    "n": n,
                    "event_id": accepted.event_id,
                    "recipients": recipients,
                    "at": time.time(),
                }
                log.write(json.dumps(line) + "\n")
                return
            log.write(json.dumps({"n": n, "failed": True}) + "\n")

        start = time.monotonic()
        while time.monotonic() - start < seconds:
            due = int((time.monotonic() - start) * rate) + 1
            while sent < due:
                recipients = rng.sample(
                    [f"u-{i:04d}" for i in range(users)], rng.choice((1, 1, 2, 3))
                )
                task = asyncio.create_task(publish(sent, recipients))
                pending.add(task)
                task.add_done_callback(pending.discard)
                sent += 1
            await asyncio.sleep(0.01)
        await asyncio.gather(*pending)
        log.write(json.dumps({"sent": sent}) + "\n")
    for client in clients:
        await client.close()


def start_load(urls: list[str], key: str, config: SoakConfig, out: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable, __file__, "--load", ",".join(urls), "--key", key,
            "--rate", str(config.rate), "--seconds", str(config.seconds),
            "--users", str(config.users), "--out", str(out),
        ],
        cwd=ROOT,
    )  # fmt: skip


# -- the run ---------------------------------------------------------------------------


def _rss_kib(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def run_soak(config: SoakConfig) -> SoakReport:
    report = SoakReport()
    with contextlib.ExitStack() as stack:
        base = config.base_dir or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="soak-"))
        )
        pg = OwnPostgres()
        stack.callback(pg.stop)
        await asyncio.to_thread(pg.init)
        cluster = stack.enter_context(NatsCluster(size=3, base_dir=base / "nats"))
        sink, smtp_port = stack.enter_context(smtp_sink())
        async with deployment(base, pg, cluster.urls, smtp_port) as deployed:
            await _soak(config, report, deployed, pg, cluster, sink, base)
    return report


async def _soak(
    config: SoakConfig,
    report: SoakReport,
    deployed: Deployment,
    pg: OwnPostgres,
    cluster: NatsCluster,
    sink: Sink,
    base: Path,
) -> None:
    env = deployed.env
    key = last_line(
        (
            await asyncio.to_thread(
                run_cli,
                [
                    "keys",
                    "create",
                    "--name",
                    "soak",
                    "--types",
                    "*",
                    "--scope",
                    ",".join(CAPABILITIES),
                ],
                env,
            )
        ).stdout
    )
    await _create_users(deployed.apis[0][1], key, config)
    out = base / "load.jsonl"
    load = start_load([url for _, url in deployed.apis], key, config, out)
    began = time.time()
    rng = random.Random(11)
    fault_at: list[float] = []

    def fault(name: str) -> None:
        at = time.time() - began
        report.faults.append((name, at))
        fault_at.append(time.time())
        print(f"[{at:6.1f}s] {name}", flush=True)

    async def at(fraction: float) -> None:
        await asyncio.sleep(max(0.0, began + config.seconds * fraction - time.time()))

    await at(0.1)
    measured = {
        **{f"api-{i}": api.pid for i, (api, _) in enumerate(deployed.apis)},
        "worker-1": deployed.workers[1].pid,
    }
    rss_start = {name: _rss_kib(pid) for name, pid in measured.items()}
    if config.faults:
        await at(0.2)
        fault("worker-0 SIGKILLed")
        await deployed.workers[0].kill()
        report.worker_kills += 1
        deployed.start_worker("worker-2")
        await at(0.35)
        fault("PostgreSQL restarted (immediate stop)")
        await asyncio.to_thread(pg.crash_restart)
        report.database_restarts += 1
        await at(0.5)
        node = rng.randrange(3)
        fault(f"NATS node {node} SIGKILLed")
        cluster.kill(node)
        await at(0.65)
        fault(f"NATS node {node} restarted")
        await asyncio.to_thread(cluster.start, node)
        await at(0.7)
        fault("SMTP answers 451")
        sink.failing = True
        await at(0.8)
        fault("SMTP accepts again")
        sink.failing = False
        await at(0.85)
        # RSS of worker-1 is read just before it dies; the end figure of a long-lived
        # worker is then worker-2's, measured from its own start.
        rss_end_worker1 = _rss_kib(deployed.workers[1].pid)
        fault("worker-1 SIGKILLed")
        await deployed.workers[1].kill()
        report.worker_kills += 1
        deployed.start_worker("worker-3")
    else:
        rss_end_worker1 = 0
    await asyncio.to_thread(load.wait)
    if load.returncode != 0:
        raise RuntimeError(f"the load process exited with {load.returncode}")

    acknowledged: dict[str, tuple[list[str], float]] = {}
    for line in out.read_text().splitlines():
        row = json.loads(line)
        if "sent" in row:
            report.sent = row["sent"]
        elif "event_id" in row:
            acknowledged[row["event_id"]] = (row["recipients"], row["at"])
    report.acknowledged = len(acknowledged)

    with_email = {f"u-{i:04d}" for i in range(config.users) if _has_email(i, config)}
    wanted_items = {(e, u) for e, (users, _) in acknowledged.items() for u in users}
    wanted_emails = {(e, u) for e, u in wanted_items if u in with_email}
    report.expected_items = len(wanted_items)
    report.expected_emails = len(wanted_emails)

    drain_start = time.monotonic()
    while True:
        items, emails = await _observed(pg, sink)
        if wanted_items <= items.keys() and wanted_emails <= emails.keys():
            report.drained_in = time.monotonic() - drain_start
            break
        if time.monotonic() - drain_start > config.drain_timeout:
            break
        await asyncio.sleep(1.0)

    items, emails = await _observed(pg, sink)
    report.delivered_items = len(wanted_items & items.keys())
    report.lost_items = len(wanted_items - items.keys())
    report.duplicated_items = sum(n - 1 for n in items.values() if n > 1)
    report.delivered_emails = len(wanted_emails & emails.keys())
    report.lost_emails = len(wanted_emails - emails.keys())
    report.duplicated_emails = sum(n - 1 for n in emails.values() if n > 1)
    report.smtp_refusals = sink.refused

    if sink.again_at:
        report.diagnosis.append(
            "emails received again at "
            + ", ".join(f"{at - began:.1f}s" for at in sorted(sink.again_at))
        )
    missing = sorted((wanted_items - items.keys()) | (wanted_emails - emails.keys()))
    if missing:
        report.diagnosis += await _diagnose(pg, missing[:20])

    written = await _item_times(pg)
    for (event_id, _user), created in written.items():
        if event_id not in acknowledged:
            continue
        accepted_at = acknowledged[event_id][1]
        during = any(start <= accepted_at <= start + FAULT_GRACE for start in fault_at)
        (report.latency_during if during else report.latency_calm).append(
            max(0.0, created - accepted_at)
        )

    for name, pid in measured.items():
        end = rss_end_worker1 if name == "worker-1" and config.faults else _rss_kib(pid)
        report.rss_kib[name] = (rss_start[name], end)
    if config.faults:
        survivor = next(w for w in deployed.workers if w.name == "worker-2")
        report.rss_kib["worker-2 (from 0.2)"] = (0, _rss_kib(survivor.pid))


def _has_email(index: int, config: SoakConfig) -> bool:
    return index < int(config.users * config.email_share)


async def _create_users(url: str, key: str, config: SoakConfig) -> None:
    from tidings.client import AsyncTidings

    async with AsyncTidings(url, key) as tidings:
        for i in range(config.users):
            email = f"user{i}@example.com" if _has_email(i, config) else None
            await tidings.put_user(f"u-{i:04d}", email=email, name=f"User {i}")


async def _observed(
    pg: OwnPostgres, sink: Sink
) -> tuple[dict[tuple[str, str], int], dict[tuple[str, str], int]]:
    """Inbox items per (event, user), and emails the sink accepted per (event, user)."""
    for _ in range(30):
        try:
            conn = await pg.connect()
            break
        except (OSError, asyncpg.PostgresError):
            await asyncio.sleep(1.0)
    else:
        raise RuntimeError("PostgreSQL did not come back")
    try:
        rows = await conn.fetch(
            "SELECT event_id, user_id, count(*) AS n FROM inbox_items GROUP BY event_id, user_id"
        )
        by_message = await conn.fetch(
            "SELECT message_id, event_id, user_id FROM deliveries "
            "WHERE channel = 'email' AND message_id IS NOT NULL"
        )
    finally:
        await conn.close()
    items = {(r["event_id"], r["user_id"]): r["n"] for r in rows}
    received = dict(sink.received)
    emails: dict[tuple[str, str], int] = {}
    for row in by_message:
        n = received.get(row["message_id"], 0)
        if n:
            emails[(row["event_id"], row["user_id"])] = n
    return items, emails


async def _diagnose(pg: OwnPostgres, missing: list[tuple[str, str]]) -> list[str]:
    """Where the first missing (event, user) pairs are stuck."""
    conn = await pg.connect()
    try:
        lines = [
            "outbox rows left: "
            + str(await conn.fetchval("SELECT count(*) FROM jobs"))
            + ", dead letters: "
            + str(await conn.fetchval("SELECT count(*) FROM dead_letters"))
        ]
        for event_id, user in missing:
            planned = await conn.fetchval("SELECT planned_at FROM events WHERE id = $1", event_id)
            states = await conn.fetch(
                "SELECT channel, state, reason, detail FROM deliveries "
                "WHERE event_id = $1 AND user_id = $2",
                event_id,
                user,
            )
            shown = "; ".join(
                f"{r['channel']} {r['state']} {r['reason'] or ''} {r['detail'] or ''}"[:120]
                for r in states
            )
            shown = shown or "no delivery"
            lines.append(f"missing {event_id} {user}: planned_at={planned} {shown}")
    finally:
        await conn.close()
    return lines


async def _item_times(pg: OwnPostgres) -> dict[tuple[str, str], float]:
    conn = await pg.connect()
    try:
        rows = await conn.fetch(
            "SELECT event_id, user_id, min(created_at) AS at FROM inbox_items "
            "GROUP BY event_id, user_id"
        )
    finally:
        await conn.close()
    return {(r["event_id"], r["user_id"]): r["at"].timestamp() for r in rows}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the load runs")
    parser.add_argument("--rate", type=float, default=50.0, help="events per second")
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--no-faults", action="store_true")
    parser.add_argument("--drain-timeout", type=float, default=180.0)
    parser.add_argument("--load", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        asyncio.run(
            _load(
                args.load.split(","), args.key, args.rate, args.seconds, args.users, Path(args.out)
            )
        )
        return
    config = SoakConfig(
        seconds=args.seconds, rate=args.rate, users=args.users,
        faults=not args.no_faults, drain_timeout=args.drain_timeout,
    )  # fmt: skip
    report = asyncio.run(run_soak(config))
    print("\n".join(report.lines()))
    if (
        report.lost_items
        or report.duplicated_items
        or report.lost_emails
        or report.duplicated_emails > report.duplicate_bound
    ):
        sys.exit(1)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    main()
