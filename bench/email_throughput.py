"""W4 email: emails/s rendered, DKIM-signed and accepted by an aiosmtpd sink on loopback.

Side by side, in the same run and alternating, against the same sink (``SmtpSink`` of
``tests/smtp_sink.py``, plain SMTP on a free loopback port, in a **separate process** so
its CPU never shares the client's event loop), for C in ``--connections`` (1 and 8):

* ``raw``      the ceiling: an ``aiosmtplib`` loop re-sending one pre-built Tidings
               message (signed; the same bytes every time) over C connections (uvloop);
* ``tidings``  Tidings' email stage per message: ``EmailComposer.compose`` (render the
               ``comment.created`` templates, one-click unsubscribe token, MIME build,
               DKIM sign) then ``SmtpProvider.send`` with ``pool_size`` C, streaming:
               2 x C tasks each composing one message and sending it (uvloop);
* ``batch``    the same work in the shape the sender (``delivery/sender.py``) gives it
               in ``tidings serve``: compose a whole batch of 500, then ``gather``
               their sends;
* ``offload``  a candidate fix, not in src/: the same compose in one worker process
               (25 messages a call, up to 4 chunks ahead) while this loop only sends
               through ``SmtpProvider``; its client CPU includes the worker's;
* ``apprise``  the same emails (the subject and the HTML Tidings rendered for that
               recipient, handed over ready made, ``body_format=html``) through apprise's
               ``mailto://`` plugin with its throttle off (``request_rate_per_sec = 0``),
               one at a time (C=1) or from C threads; apprise does not sign (no DKIM).

Each round runs, for each C, ``raw`` then every other variant followed by ``raw`` again
(raw, tidings, raw, batch, raw, ...; the order rotated from round to round), and each
variant is compared with the mean of the two raw runs beside it: the load of a shared
machine drifts within seconds, so only a ratio to the runs right beside it holds.
``--runs`` rounds. ``--pipeline`` adds W4 end to end to each round, between two raw C=8
runs: ``tidings serve`` (SQLite, SMTP provider, pool 8) gets 10,000 ``comment.created``
events, each for one recipient with an email address, through ``POST /v1/events/batch``
in batches of 500, timed from the first POST until every ``deliveries`` row of channel
``email`` is ``sent``.

Per measurement: emails/s, the CPU of the client (this process, or the server for the
pipeline) and of the sink over the interval, and how busy the whole machine was; then the
medians with their spread, CPU per email, and the ratios (tidings/raw at the same C,
tidings/apprise, ...), each taken against the raw runs beside it, then the median. One
message received by the sink is checked with dkimpy's verifier. ``--profile DIR`` adds
per-step costs of ``compose``, pyinstrument runs of ``tidings`` at C=1 and C=8, and (with
``--pipeline``) py-spy on ``tidings serve``.

    .venv/bin/python bench/email_throughput.py                 # a few minutes
    .venv/bin/python bench/email_throughput.py --messages 2000 --apprise-messages 100 \
        --runs 5 --pipeline --profile /tmp/email-profile
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime as dt
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

SENDER = "notifications@tidings.test"
SENDER_NAME = "Tidings"
DOMAIN = "tidings.test"
SELECTOR = "bench"
VARIANTS = ("raw", "tidings", "batch", "offload", "apprise")
BATCH = 500  # the worker's default batch size (TIDINGS_WORKER_BATCH_SIZE)
_FILLER = (
    "Looks good to me; the numbers in the second section still need a source, and the "
    "timeline slips if design review moves again. Let us talk it through on Thursday. "
) * 20

# The sink: tests/smtp_sink.py's SmtpSink in its own process, on its own event loop.
# It prints its port, then answers "take" on stdin with "<count> <base64 of the last
# message>" and forgets what it received so far (memory stays flat over many runs).
SINK_CODE = r"""
import asyncio, base64, sys
sys.path.insert(0, sys.argv[1])
from tests.smtp_sink import SmtpSink

async def main():
    sink = SmtpSink()
    await sink.start()
    print(sink.port, flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        if line.strip() == b"take":
            with sink._state.lock:
                received = sink._state.received
                count = len(received)
                last = received[-1].raw if received else b""
                received.clear()
            sys.stdout.write(f"{count} {base64.b64encode(last).decode()}\n")
            sys.stdout.flush()
    await sink.stop()

if sys.argv[2] == "uvloop":
    import uvloop
    uvloop.run(main())
else:
    asyncio.run(main())
"""


# ---------------------------------------------------------------------------- helpers


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads) so far."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    with open("/proc/stat") as handle:
        parts = [int(x) for x in handle.readline().split()[1:]]
    idle = parts[3] + parts[4]
    total = sum(parts[:8])
    return (total - idle), total


def summary(values: Sequence[float], fmt: str = "{:,.0f}") -> str:
    """``median (min..max, ±spread %)``; the spread is half the range over the median."""
    if not values:
        return "n/a"
    med = statistics.median(values)
    spread = (max(values) - min(values)) / 2 / med * 100 if med else 0.0
    return (
        f"{fmt.format(med)} ({fmt.format(min(values))}..{fmt.format(max(values))}, ±{spread:.0f} %)"
    )


class SinkProcess:
    """The aiosmtpd sink in a child process of ours."""

    def __init__(self, loop_kind: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SINK_CODE, str(ROOT), loop_kind],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the SMTP sink did not start")
        self.port = int(line)
        self.host = "127.0.0.1"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def take(self) -> tuple[int, bytes]:
        """How many messages arrived since the last take, and the last one's bytes."""
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write("take\n")
        self.proc.stdin.flush()
        count, _, last = self.proc.stdout.readline().strip().partition(" ")
        return int(count), base64.b64decode(last)

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class Measurement:
    variant: str
    connections: int
    sent: int
    seconds: float
    client_cpu: float  # CPU seconds of this process over the interval
    sink_cpu: float
    machine: float  # share of the machine's CPU busy over the interval
    accepted: int = 0  # what the sink counted
    extra: dict[str, Any] = field(default_factory=dict)
    own_cpu: float | None = None  # CPU seconds of this process alone, when helpers ran too

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0

    def line(self) -> str:
        return (
            f"{self.variant:>8} C={self.connections}: {self.rate:7,.0f} emails/s "
            f"({self.sent:,} in {self.seconds:5.2f} s; "
            f"CPU client {self.client_cpu / self.seconds:4.0%}"
            + (f" (this process {self.own_cpu / self.seconds:.0%})" if self.own_cpu else "")
            + ", "
            f"sink {self.sink_cpu / self.seconds:4.0%}, machine {self.machine:4.0%} busy)"
        )


def measured(
    variant: str,
    connections: int,
    sink: SinkProcess,
    run: Callable[[], tuple[int, float]],
    helpers: Sequence[int] = (),
) -> Measurement:
    """Run one variant: ``run`` returns (messages sent, seconds of the timed part).

    The client's CPU is this process's plus that of the ``helpers`` processes.
    """

    def client() -> float:
        return time.process_time() + sum(cpu_seconds(pid) for pid in helpers)

    own0, cpu0, sink0, (busy0, total0) = (
        time.process_time(),
        client(),
        cpu_seconds(sink.pid),
        machine_busy(),
    )
    sent, seconds = run()
    own1, cpu1, sink1, (busy1, total1) = (
        time.process_time(),
        client(),
        cpu_seconds(sink.pid),
        machine_busy(),
    )
    accepted, _ = sink.take()
    return Measurement(
        variant,
        connections,
        sent,
        seconds,
        cpu1 - cpu0,
        sink1 - sink0,
        (busy1 - busy0) / max(1, total1 - total0),
        accepted,
        own_cpu=own1 - own0 if helpers else None,
    )


# ---------------------------------------------------------------------------- workload


class Workload:
    """The catalog, composer and per-recipient contexts of the emails sent."""

    def __init__(
        self,
        catalog_dir: Path,
        comment_chars: int,
        key_pem: bytes | None = None,
        now: dt.datetime | None = None,
    ) -> None:
        from tidings import catalog
        from tidings.email.composer import EmailComposer, Sender
        from tidings.email.dkim import DkimSigner, generate_key

        types = catalog.load(catalog_dir)
        ntype = types.get("comment.created")
        assert ntype is not None, "the catalog has no comment.created"
        self.ntype = ntype
        self.category = types.category(ntype.category)
        self.key_pem = key_pem or generate_key()
        self.signer = DkimSigner(domain=DOMAIN, selector=SELECTOR, private_key_pem=self.key_pem)
        self.composer = EmailComposer(
            sender=Sender(SENDER, SENDER_NAME, DOMAIN),
            signer=self.signer,
            unsubscribe_secret="bench-unsubscribe-secret-" + "x" * 40,
            base_url="http://127.0.0.1:8000",
            unsubscribe_mailto=f"unsubscribe@{DOMAIN}",
        )
        self.text = _FILLER[:comment_chars]
        self.now = now or dt.datetime.now(dt.UTC)

    @staticmethod
    def address(i: int) -> str:
        return f"user{i}@example.com"

    def context(self, i: int) -> dict[str, Any]:
        return {
            "data": {
                "board": {"id": f"b-{i % 97}", "name": "Roadmap 2026"},
                "comment": {"id": f"c-{i}", "text": f"#{i}: {self.text}"},
            },
            "actor": {"id": f"u-{i % 1000}", "name": f"User {i % 1000}"},
            "recipient": {
                "id": f"u-{i}",
                "name": None,
                "email": self.address(i),
                "locale": None,
                "timezone": None,
            },
            "event": {"id": f"e-{i}", "type": "comment.created", "tenant": "default"},
        }

    def compose(self, i: int, tag: str) -> Any:
        return self.composer.compose(
            delivery_id=f"d{tag}x{i}",
            ntype=self.ntype,
            category=self.category,
            context=self.context(i),
            to_address=self.address(i),
            to_name=None,
            user_id=f"u-{i}",
            locale=None,
            now=self.now,
        )

    def rendered(self, i: int) -> Any:
        return self.ntype.render_email(self.context(i), None)


# ---------------------------------------------------------------------------- variants


async def run_raw(host: str, port: int, conns: int, n: int, raw: bytes) -> tuple[int, float]:
    """(a) one pre-built message, re-sent n times over ``conns`` aiosmtplib connections."""
    import aiosmtplib

    indexes = iter(range(n))
    clients = [
        aiosmtplib.SMTP(hostname=host, port=port, start_tls=False, use_tls=False, timeout=60)
        for _ in range(conns)
    ]

    async def worker(smtp: aiosmtplib.SMTP) -> int:
        await smtp.connect()
        sent = 0
        for i in indexes:
            await smtp.sendmail(SENDER, [Workload.address(i)], raw)
            sent += 1
        return sent

    t0 = time.perf_counter()
    sent = sum(await asyncio.gather(*(worker(smtp) for smtp in clients)))
    seconds = time.perf_counter() - t0
    await asyncio.gather(*(smtp.quit() for smtp in clients))
    return sent, seconds


async def run_tidings(
    host: str, port: int, pool: int, n: int, work: Workload, tag: str, inflight: int
) -> tuple[int, float]:
    """(b) compose + SmtpProvider.send per message, ``inflight`` composed at a time."""
    from tidings.email.providers.smtp import SmtpProvider, SmtpSettings

    provider = SmtpProvider(SmtpSettings(host=host, port=port, security="none", pool_size=pool))
    indexes = iter(range(n))

    async def worker() -> int:
        sent = 0
        for i in indexes:
            await provider.send(work.compose(i, tag))
            sent += 1
        return sent

    t0 = time.perf_counter()
    sent = sum(await asyncio.gather(*(worker() for _ in range(inflight))))
    seconds = time.perf_counter() - t0
    await provider.close()
    return sent, seconds


async def run_batch_shape(
    host: str, port: int, pool: int, n: int, work: Workload, tag: str
) -> tuple[int, float]:
    """(b') the sender's shape (``delivery/sender.py``): a batch of 500 composed, then sent."""
    from tidings.email.providers.smtp import SmtpProvider, SmtpSettings

    provider = SmtpProvider(SmtpSettings(host=host, port=port, security="none", pool_size=pool))
    sent = 0
    t0 = time.perf_counter()
    for start in range(0, n, BATCH):
        emails = [work.compose(i, tag) for i in range(start, min(n, start + BATCH))]
        sent += len(await asyncio.gather(*(provider.send(email) for email in emails)))
    seconds = time.perf_counter() - t0
    await provider.close()
    return sent, seconds


# A worker process's own Workload, for ``offload`` (built by its initializer).
_OFFLOAD: dict[str, Workload] = {}


def _offload_init(paths: list[str], catalog_dir: str, chars: int, key: bytes, now: str) -> None:
    sys.path[:0] = [p for p in paths if p not in sys.path]
    _OFFLOAD["work"] = Workload(Path(catalog_dir), chars, key, dt.datetime.fromisoformat(now))


def _offload_compose(tag: str, start: int, stop: int) -> list[Any]:
    work = _OFFLOAD["work"]
    return [work.compose(i, tag) for i in range(start, stop)]


def offload_pool(work: Workload, catalog_dir: Path, chars: int) -> Any:
    """One worker process that composes (the ``offload`` variant's), started and warmed."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    paths = [p for p in sys.path if p]
    pool = ProcessPoolExecutor(
        1,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_offload_init,
        initargs=(paths, str(catalog_dir), chars, work.key_pem, work.now.isoformat()),
    )
    pool.submit(_offload_compose, "warm", 0, 20).result()
    return pool


async def run_offload(
    host: str, port: int, conns: int, n: int, tag: str, executor: Any, chunk: int = 25
) -> tuple[int, float]:
    """(b'') a candidate fix: compose in a worker process, chunk by chunk, while this loop
    only sends (SmtpProvider, pool ``conns``); up to 4 chunks composed ahead."""
    from tidings.email.providers.smtp import SmtpProvider, SmtpSettings

    loop = asyncio.get_running_loop()
    provider = SmtpProvider(SmtpSettings(host=host, port=port, security="none", pool_size=conns))
    ready: asyncio.Queue[Any] = asyncio.Queue(maxsize=4 * chunk)

    async def produce() -> None:
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            for email in await loop.run_in_executor(executor, _offload_compose, tag, start, stop):
                await ready.put(email)
        for _ in range(2 * conns):
            await ready.put(None)

    async def send() -> int:
        sent = 0
        while (email := await ready.get()) is not None:
            await provider.send(email)
            sent += 1
        return sent

    t0 = time.perf_counter()
    producer = asyncio.create_task(produce())
    sent = sum(await asyncio.gather(*(send() for _ in range(2 * conns))))
    seconds = time.perf_counter() - t0
    await producer
    await provider.close()
    return sent, seconds


def run_apprise(
    host: str, port: int, threads: int, items: list[tuple[str, str, str]]
) -> tuple[int, float]:
    """(c) apprise's mailto:// plugin, throttle off, from ``threads`` threads."""
    import apprise

    def one(item: tuple[str, str, str]) -> bool:
        to, subject, html = item
        url = f"mailto://{host}:{port}/{to}?from={SENDER}&name={SENDER_NAME}&mode=insecure"
        plugin = apprise.Apprise.instantiate(url)
        if plugin is None:
            raise RuntimeError(f"apprise refused {url}")
        plugin.request_rate_per_sec = 0  # the per-plugin throttle, off
        return bool(plugin.notify(body=html, title=subject, body_format=apprise.NotifyFormat.HTML))

    t0 = time.perf_counter()
    if threads == 1:
        ok = sum(one(item) for item in items)
    else:
        with ThreadPoolExecutor(threads) as pool:
            ok = sum(pool.map(one, items))
    return ok, time.perf_counter() - t0


# ---------------------------------------------------------------------------- W4 end to end


def run_pipeline(
    sink: SinkProcess,
    events: int,
    pool: int,
    profile_to: Path | None = None,
    *,
    db: str = "sqlite",
    serve_args: Sequence[str] = (),
    meter_pg: bool = False,
) -> Measurement:
    """(d) ``tidings serve`` (SQLite, or a fresh PostgreSQL database with ``db``), SMTP to
    the sink: first POST → the sink has received every email.

    With ``profile_to``, py-spy samples the server meanwhile (raw stacks to that file).
    ``extra`` gets the ingest time, the deliveries' states at the end, and with
    ``meter_pg`` the CPU seconds of the database's PostgreSQL backends.
    """
    import httpx
    import orjson

    from _common import CpuMeter, Deployment, PgCpu, pyspy

    with Deployment(db) as deployment:
        deployment.env.update(
            TIDINGS_EMAIL_PROVIDER="smtp",
            TIDINGS_SMTP_HOST=sink.host,
            TIDINGS_SMTP_PORT=str(sink.port),
            TIDINGS_SMTP_SECURITY="none",
            TIDINGS_SMTP_POOL_SIZE=str(pool),
        )
        deployment.start(("serve", *serve_args))
        assert deployment.proc is not None
        text = _FILLER[:200]
        bodies = []
        for start in range(0, events, BATCH):
            batch = [
                {
                    "type": "comment.created",
                    "idempotency_key": f"w4-{i}",
                    "actor": {"id": f"u-a{i % 1000}", "name": f"User {i % 1000}"},
                    "recipients": [{"id": f"u-{i}", "email": Workload.address(i)}],
                    "data": {
                        "board": {"id": f"b-{i % 97}", "name": "Roadmap 2026"},
                        "comment": {"id": f"c-{i}", "text": f"#{i}: {text}"},
                    },
                }
                for i in range(start, min(events, start + BATCH))
            ]
            bodies.append(orjson.dumps({"events": batch}))
        headers = {"Authorization": f"Bearer {deployment.key}", "Content-Type": "application/json"}
        sink.take()  # what earlier runs left
        _warm_up(deployment.base_url, headers, sink)
        pg = PgCpu(deployment.pg_name) if meter_pg and deployment.pg_name else None
        with contextlib.ExitStack() as stack:
            if profile_to is not None:
                stack.enter_context(pyspy(deployment.proc.pid, profile_to, subprocesses=True))
            meter = CpuMeter({"server": deployment.proc.pid, "sink": sink.pid})
            if pg:
                asyncio.run(pg.start())
            meter.start()
            t0 = time.perf_counter()
            with httpx.Client(base_url=deployment.base_url, headers=headers, timeout=120) as http:
                for body in bodies:
                    reply = http.post("/v1/events/batch", content=body)
                    if reply.status_code >= 300:
                        raise RuntimeError(f"batch POST: {reply.status_code} {reply.text[:500]}")
            ingest = time.perf_counter() - t0
            # The end: the sink has every email (counted there, whatever the server keeps).
            sent, seconds, deadline = 0, 0.0, time.monotonic() + 600
            while time.monotonic() < deadline:
                sent += sink.take()[0]
                seconds = time.perf_counter() - t0
                if sent >= events:
                    break
                if deployment.proc.poll() is not None:
                    raise RuntimeError(f"the server exited:\n{deployment.server_log_tail()}")
                time.sleep(0.05)
            meter.stop()
            if pg:
                asyncio.run(pg.stop())
        states = _delivery_states(deployment)
    return Measurement(
        "pipeline",
        pool,
        sent,
        seconds,
        meter.used["server"],  # the server's CPU (with its child processes), not this process's
        meter.used["sink"],
        meter.machine_busy,
        sent,
        {
            "ingest_seconds": ingest,
            "states": states,
            "pg_cpu": pg.seconds if pg else None,
            "server_processes": len(meter.processes.get("server", [])),
            "describe": meter.describe(),
        },
    )


def _warm_up(base_url: str, headers: dict[str, str], sink: SinkProcess, emails: int = 8) -> None:
    """A few emails through the whole server first, so that what starts on the first one
    (connections, the processes that compose email, template caches) is not timed."""
    import httpx

    events = [
        {
            "type": "comment.created",
            "idempotency_key": f"w4-warm-{i}",
            "actor": {"id": "u-warm", "name": "Warm"},
            "recipients": [{"id": f"u-warm-{i}", "email": f"warm{i}@example.com"}],
            "data": {
                "board": {"id": "b-0", "name": "Warm"},
                "comment": {"id": "c-0", "text": "hi"},
            },
        }
        for i in range(emails)
    ]
    reply = httpx.post(
        f"{base_url}/v1/events/batch", json={"events": events}, headers=headers, timeout=60
    )
    if reply.status_code >= 300:
        raise RuntimeError(f"warm-up batch: {reply.status_code} {reply.text[:500]}")
    got, deadline = 0, time.monotonic() + 120
    while got < emails:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the warm-up emails did not arrive ({got} of {emails})")
        time.sleep(0.1)
        got += sink.take()[0]


def _delivery_states(deployment: Any) -> dict[str, int]:
    """Email deliveries per state at the end, read from the server's tables (empty if the
    schema has none)."""
    sql = "SELECT state, count(*) FROM deliveries WHERE channel = 'email' GROUP BY state"

    async def read() -> dict[str, int]:
        counter = deployment.counter()
        await counter.open()
        try:
            return {str(state): int(n) for state, n in await counter.fetch(sql)}
        finally:
            await counter.close()

    try:
        return asyncio.run(read())
    except Exception:
        return {}


# ---------------------------------------------------------------------------- stage costs


def stage_costs(work: Workload, n: int = 400) -> list[tuple[str, float]]:
    """Milliseconds per message of each step of ``compose``, measured in this process."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    from tidings.email import mime

    def timed(fn: Callable[[int], Any]) -> float:
        for i in range(20):
            fn(i)
        t0 = time.process_time()
        for i in range(n):
            fn(i)
        return (time.process_time() - t0) / n * 1e3

    rendered = [work.rendered(i) for i in range(n)]
    unsub = [work.composer.unsubscribe_for(f"u-{i}", "comments", work.address(i)) for i in range(n)]
    built = [
        mime.build_message(
            sender=SENDER,
            sender_name=SENDER_NAME,
            recipient=work.address(i),
            recipient_name=None,
            rendered=rendered[i],
            message_id=f"<d{i}@{DOMAIN}>",
            date=work.now,
            unsubscribe=unsub[i],
        )
        for i in range(n)
    ]
    key = work.signer._key  # the loaded RSA key, to time the bare signature
    digest = b"x" * 600
    return [
        ("render (Jinja2 subject/HTML/text)", timed(lambda i: work.rendered(i))),
        (
            "unsubscribe token",
            timed(lambda i: work.composer.unsubscribe_for(f"u-{i}", "comments", work.address(i))),
        ),
        (
            "MIME build",
            timed(
                lambda i: mime.build_message(
                    sender=SENDER,
                    sender_name=SENDER_NAME,
                    recipient=work.address(i % n),
                    recipient_name=None,
                    rendered=rendered[i % n],
                    message_id=f"<d{i}@{DOMAIN}>",
                    date=work.now,
                    unsubscribe=unsub[i % n],
                )
            ),
        ),
        ("DKIM sign (canonicalise + RSA-2048)", timed(lambda i: work.signer.sign(built[i % n]))),
        (
            "  of which the RSA-2048 signature",
            timed(lambda i: key.sign(digest, padding.PKCS1v15(), hashes.SHA256())),
        ),
        ("compose, all of it", timed(lambda i: work.compose(i, "cost"))),
    ]


# ---------------------------------------------------------------------------- profile


def profile_tidings(
    sink: SinkProcess, work: Workload, pool: int, n: int, out: Path
) -> tuple[Measurement, str]:
    """One ``tidings`` run under pyinstrument (wall-clock samples of the client's thread)."""
    import uvloop
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.0005, async_mode="disabled")

    def go() -> tuple[int, float]:
        async def main() -> tuple[int, float]:
            profiler.start()
            try:
                return await run_tidings(
                    sink.host, sink.port, pool, n, work, f"prof{pool}", 2 * pool
                )
            finally:
                profiler.stop()

        return uvloop.run(main())

    m = measured("tidings*", pool, sink, go)
    out.write_text(profiler.output_text(unicode=True, color=False, show_all=True))
    return m, _steps(profiler.last_session)


# (label, qualified function name, indent): inclusive time of the outermost such frame.
_STEPS = [
    ("compose (render + build + sign)", "EmailComposer.compose", 0),
    ("render (Jinja2)", "NotificationType.render_email", 1),
    ("unsubscribe token (PyJWT)", "EmailComposer.unsubscribe_for", 1),
    ("MIME build", "build_message", 1),
    ("DKIM sign", "DkimSigner.sign", 1),
    ("RSA-2048 signature (OpenSSL)", "RSAPrivateKey.sign", 2),
    ("body canonicalisation", "_relaxed_body", 2),
    ("SmtpProvider.send", "SmtpProvider.send", 0),
    ("aiosmtplib sendmail", "SMTP.sendmail", 1),
    ("SMTPProtocol.write (send syscalls)", "SMTPProtocol.write", 2),
    ("address parsing (stdlib email)", "parse_address", 2),
    ("replies arriving (protocol callbacks)", "SMTPProtocol.data_received", 0),
]


def _steps(session: Any) -> str:
    """Inclusive wall time of each step, as a share of the profiled run, and the idle loop."""
    root = session.root_frame()
    if root is None:
        return "    (no samples)"
    found = {label: 0.0 for label, *_ in _STEPS}

    def walk(frame: Any, open_labels: frozenset[str]) -> None:
        labels = set(open_labels)
        name = frame.function
        if frame.class_name and "." not in name:
            name = f"{frame.class_name}.{name}"
        for label, qualified, _ in _STEPS:
            if label not in open_labels and name == qualified:
                found[label] += frame.time
                labels.add(label)
        for child in frame.children:
            walk(child, frozenset(labels))

    walk(root, frozenset())
    idle = sum(
        child.time
        for child in root.children
        if child.is_synthetic and child.function in ("[self]", "[await]")
    )
    wall = session.duration
    lines = [
        f"    {found[label] / wall:6.1%}  {'  ' * indent}{label}" for label, _, indent in _STEPS
    ]
    lines.append(f"    {idle / wall:6.1%}  event loop idle (waiting for the sink's replies)")
    lines.append(f"    (CPU time {session.cpu_time:.2f} s of {wall:.2f} s wall)")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--messages", type=int, default=1000, help="per raw/tidings/batch/offload run"
    )
    parser.add_argument("--apprise-messages", type=int, default=60, help="per apprise run")
    parser.add_argument("--runs", type=int, default=3, help="rounds (each runs every variant)")
    parser.add_argument("--connections", default="1,8", help="comma-separated, e.g. 1,8")
    parser.add_argument(
        "--comment-chars", type=int, default=400, help="comment length in each email"
    )
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"comma-separated subset of {','.join(VARIANTS)} (raw and tidings always run)",
    )
    parser.add_argument(
        "--pipeline", action="store_true", help="also W4 end to end through tidings serve"
    )
    parser.add_argument("--pipeline-events", type=int, default=10_000)
    parser.add_argument("--pipeline-pool", type=int, default=8, help="TIDINGS_SMTP_POOL_SIZE")
    parser.add_argument(
        "--sink-loop",
        choices=("asyncio", "uvloop"),
        default="asyncio",
        help="event loop of the sink process (default asyncio, as the tests run it)",
    )
    parser.add_argument(
        "--profile", type=Path, help="folder for pyinstrument reports of tidings C=1 and C=max"
    )
    parser.add_argument(
        "--code", help="measure this commit (e.g. HEAD) from a clean snapshot, not the work tree"
    )
    args = parser.parse_args()
    conns = [int(c) for c in args.connections.split(",")]
    unknown = set(args.variants.split(",")) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants: {', '.join(sorted(unknown))}")
    args.variants = [v for v in VARIANTS if v in [*args.variants.split(","), "raw", "tidings"]]

    catalog_dir = ROOT / "catalog"
    code = _code_line()
    if args.code:
        from _common import use_code

        commit = use_code(args.code)
        from _common import _CODE

        sys.path.insert(0, _CODE["dir"] + "/src")
        catalog_dir = Path(_CODE["dir"]) / "catalog"
        code = f"{commit} (clean snapshot)"

    import aiosmtpd
    import aiosmtplib
    import apprise
    import uvloop

    import tidings

    print(f"machine: {_machine_line()}")
    print(
        f"python {sys.version.split()[0]}, aiosmtplib {aiosmtplib.__version__}, aiosmtpd "
        f"{aiosmtpd.__version__}, apprise {apprise.__version__}, "
        f"uvloop {getattr(uvloop, '__version__', '?')}"
    )
    print(f"code: {code}; tidings from {Path(tidings.__file__).parent}")

    work = Workload(catalog_dir, args.comment_chars)
    sample = work.compose(0, "sample")
    rendered = work.rendered(0)
    print(
        f"message: {len(sample.raw):,} bytes signed (HTML part {len(rendered.html):,} chars, "
        f"text {len(rendered.text):,}), DKIM rsa-sha256 2048-bit, relaxed/relaxed"
    )
    sink = SinkProcess(args.sink_loop)
    print(
        f"sink: aiosmtpd {aiosmtpd.__version__} (tests/smtp_sink.py) in process {sink.pid}, "
        f"{args.sink_loop} loop, 127.0.0.1:{sink.port}"
    )
    executor = (
        offload_pool(work, catalog_dir, args.comment_chars) if "offload" in args.variants else None
    )
    try:
        _bench(args, conns, work, sample.raw, sink, executor)
    finally:
        sink.stop()
        if executor is not None:
            executor.shutdown()


def _bench(
    args: argparse.Namespace,
    conns: list[int],
    work: Workload,
    raw: bytes,
    sink: SinkProcess,
    executor: Any,
) -> None:
    import uvloop

    host, port = sink.host, sink.port
    apprise_items = [
        (work.address(i), r.subject, r.html)
        for i in range(args.apprise_messages)
        for r in [work.rendered(i)]
    ]

    def variant(name: str, c: int, tag: str) -> Callable[[], Measurement]:
        n = args.messages
        if name == "raw":
            return lambda: measured(
                name, c, sink, lambda: uvloop.run(run_raw(host, port, c, n, raw))
            )
        if name == "tidings":
            return lambda: measured(
                name,
                c,
                sink,
                lambda: uvloop.run(run_tidings(host, port, c, n, work, f"{tag}c{c}", 2 * c)),
            )
        if name == "batch":
            return lambda: measured(
                name,
                c,
                sink,
                lambda: uvloop.run(run_batch_shape(host, port, c, n, work, f"{tag}b{c}")),
            )
        if name == "offload":
            return lambda: measured(
                name,
                c,
                sink,
                lambda: uvloop.run(run_offload(host, port, c, n, f"{tag}o{c}", executor)),
                list(executor._processes),  # the composing worker process
            )
        if name == "apprise":
            return lambda: measured(
                name, c, sink, lambda: run_apprise(host, port, c, apprise_items)
            )
        raise ValueError(name)

    names = args.variants

    # Warm-up, not recorded: imports, template caches, the sink's first connections.
    uvloop.run(run_raw(host, port, 1, 50, raw))
    uvloop.run(run_tidings(host, port, 2, 100, work, "warm", 4))
    if "apprise" in names:
        run_apprise(host, port, 1, apprise_items[:5])
    sink.take()

    # Every other variant runs between two raw runs of the same C (raw, x, raw, y, raw, ...)
    # and is compared with their mean: the load of the shared machine drifts from second
    # to second, so a ratio to the runs right beside it is the figure that holds.
    results: list[Measurement] = []
    pipeline: list[Measurement] = []

    def run(name: str, c: int, r: int, label: str = "") -> Measurement:
        m = variant(name, c, f"r{r}")()
        m.extra["round"] = r
        note = "" if m.accepted == m.sent else f"  [the sink counted {m.accepted}!]"
        print("  " + m.line() + note + label)
        return m

    others = [name for name in names if name != "raw"]
    for r in range(args.runs):
        print(f"\nround {r + 1}/{args.runs} (load average {os.getloadavg()[0]:.2f})")
        shift = r % len(others) if others else 0
        order = others[shift:] + others[:shift]  # rotated, so no variant always comes first
        for c in conns if r % 2 == 0 else conns[::-1]:
            before = run("raw", c, r)
            results.append(before)
            for name in order:
                m = run(name, c, r)
                after = run("raw", c, r)
                m.extra["ref"] = (before.rate + after.rate) / 2
                results += [m, after]
                before = after
        if args.pipeline:
            c = args.pipeline_pool
            before = run("raw", c, r, "  (pipeline reference)")
            p = run_pipeline(sink, args.pipeline_events, c)
            p.extra["round"] = r
            print(
                f"  pipeline C={c}: {p.rate:7,.0f} emails/s ({p.sent:,} sent in "
                f"{p.seconds:5.2f} s, events ingested in {p.extra['ingest_seconds']:.2f} s; "
                f"CPU server {p.client_cpu / p.seconds:4.0%}, sink {p.sink_cpu / p.seconds:4.0%}, "
                f"machine {p.machine:4.0%}; states {p.extra['states']}; sink counted {p.accepted})"
            )
            after = run("raw", c, r, "  (pipeline reference)")
            p.extra["ref"] = (before.rate + after.rate) / 2
            p.extra["refs"] = [before.rate, after.rate]
            pipeline.append(p)

    # DKIM on: verify one message as received by the sink, with dkimpy's verifier.
    uvloop.run(run_tidings(host, port, 1, 1, work, "verify", 1))
    _, received = sink.take()
    print(f"\nDKIM check of a received message (dkimpy verify): {_dkim_ok(received, work)}")

    _report(args, conns, names, results, pipeline)

    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
        print("\nWhere compose's time goes (CPU ms per message, this process):")
        for name, ms in stage_costs(work):
            print(f"  {ms:6.3f} ms  {name}")
        for c in sorted({min(conns), max(conns)}):
            out = args.profile / f"tidings-c{c}.txt"
            m, flat = profile_tidings(sink, work, c, args.messages, out)
            print(
                f"\npyinstrument, tidings C={c} (wall-clock samples of the client's loop; "
                f"profiled run {m.rate:,.0f} emails/s, client CPU {m.client_cpu / m.seconds:.0%}, "
                f"sink CPU {m.sink_cpu / m.seconds:.0%}) -> {out}"
            )
            print(flat)
        if args.pipeline:
            out = args.profile / "pipeline-pyspy.txt"
            p = run_pipeline(sink, args.pipeline_events, args.pipeline_pool, out)
            from profile_summary import summarize

            print(
                f"\npy-spy of tidings serve during W4 (profiled run {p.rate:,.0f} emails/s, "
                f"server CPU {p.client_cpu / p.seconds:.0%}) -> {out}"
            )
            print(summarize(out.read_text(), rate=100, duration=p.seconds, top=20))


def _report(
    args: argparse.Namespace,
    conns: list[int],
    names: list[str],
    results: list[Measurement],
    pipeline: list[Measurement],
) -> None:
    def of(name: str, c: int) -> list[Measurement]:
        return [m for m in results if m.variant == name and m.connections == c]

    def to_raw(ms: list[Measurement]) -> list[float]:
        """Each run's rate over the mean of the two raw runs beside it."""
        return [m.rate / m.extra["ref"] for m in ms if m.extra.get("ref")]

    def per_round(a: list[Measurement], b: list[Measurement]) -> list[float]:
        """a/b within each round, each first taken relative to the raw runs beside it."""
        rel_b = {m.extra["round"]: m.rate / m.extra["ref"] for m in b if m.extra.get("ref")}
        return [
            (m.rate / m.extra["ref"]) / rel_b[m.extra["round"]]
            for m in a
            if m.extra.get("ref") and rel_b.get(m.extra["round"])
        ]

    print(
        f"\nResults over {args.runs} rounds: median (min..max, ±half the range over the median); "
        "CPU in ms per email"
    )
    print(
        f"{'variant':<10}{'C':>3}  {'emails/s':<28}{'x raw beside it':<26}"
        f"{'client CPU':>11}{'sink CPU':>10}"
    )

    def row(name: str, c: int, ms: list[Measurement], note: str = "") -> None:
        ratio = summary(to_raw(ms), "{:.2f}") if name != "raw" else ""
        cpu = statistics.median(m.client_cpu / m.sent * 1e3 for m in ms if m.sent)
        scpu = statistics.median(m.sink_cpu / m.sent * 1e3 for m in ms if m.sent)
        own = [m.own_cpu / m.sent * 1e3 for m in ms if m.sent and m.own_cpu is not None]
        if own:
            note = f"  (this process alone {statistics.median(own):.2f}){note}"
        print(
            f"{name:<10}{c:>3}  {summary([m.rate for m in ms]):<28}{ratio:<26}"
            f"{cpu:>11.2f}{scpu:>10.2f}{note}"
        )

    for c in conns:
        for name in names:
            if ms := of(name, c):
                row(name, c, ms)
    if pipeline:
        row("pipeline", args.pipeline_pool, pipeline, "  (client CPU: the server's)")

    def show(label: str, values: list[float], fmt: str, note: str = "") -> None:
        print(f"  {label:<22}{summary(values, fmt)}x{note}")

    print("\nRatios (each run over the mean of the raw runs beside it; median over rounds):")
    aim = 0.8
    for c in conns:
        t = of("tidings", c)
        if ratio := to_raw(t):
            verdict = "met" if statistics.median(ratio) >= aim else "NOT met"
            show(f"tidings/raw C={c}", ratio, "{:.2f}", f"   (aim >= {aim}x: {verdict})")
        for other in ("batch", "offload"):
            if other in names:
                show(f"{other}/raw C={c}", to_raw(of(other, c)), "{:.2f}")
                show(f"{other}/tidings C={c}", per_round(of(other, c), t), "{:.2f}")
        if "apprise" in names:
            show(f"tidings/apprise C={c}", per_round(t, of("apprise", c)), "{:.1f}")
            show(f"raw/apprise C={c}", [1 / x for x in to_raw(of("apprise", c))], "{:.1f}")
    if pipeline:
        show(f"pipeline/raw C={args.pipeline_pool}", to_raw(pipeline), "{:.2f}")
        if "batch" in names:
            show(
                f"pipeline/batch C={args.pipeline_pool}",
                per_round(pipeline, of("batch", args.pipeline_pool)),
                "{:.2f}",
            )


def _dkim_ok(message: bytes, work: Workload) -> str:
    import dkim  # type: ignore[import-untyped]

    from tidings.email.dkim import dns_record

    record = dns_record(work.key_pem).encode()

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        return record if name.startswith(f"{SELECTOR}._domainkey.{DOMAIN}".encode()) else b""

    if not message.startswith(b"DKIM-Signature:"):
        return "NO SIGNATURE"
    return "valid" if dkim.verify(message, dnsfunc=dnsfunc) else "INVALID"


def _machine_line() -> str:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError), open("/proc/meminfo") as handle:
        kib = int(handle.readline().split()[1])
        mem = f", {kib / 1024 / 1024:.0f} GiB RAM"
    load = os.getloadavg()
    return f"{os.cpu_count()} cores (nproc), {model}{mem}; load average {load[0]:.2f} at start"


def _code_line() -> str:
    def git(*a: str) -> str:
        done = subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    dirty = " + uncommitted changes in src/" if git("status", "--porcelain", "src") else ""
    return f"{git('rev-parse', '--short', 'HEAD') or 'unknown'}{dirty} (work tree)"


if __name__ == "__main__":
    main()
