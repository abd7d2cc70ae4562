"""The planner's decisions per second with every noise-control rule on, against none.

Two notification types, planned in the same run, alternately:

* ``bench.plain``: in-app and email, no rules, to recipients with no preference
  documents (tenant ``plain-co``, which has none either);
* ``bench.rules``: in-app and email with dedup (on the comment id, 10 minutes), collapse
  (on the board), throttle (50 an hour per channel, over the cap into a digest),
  email-if-unseen (15 minutes) and max-age (1 hour), to recipients who all have a
  preference document (quiet hours 22:00-07:00 in their IANA zone, the email switch of
  the type's category on, a daily digest for another category) under a tenant document
  (email off for every category, an hourly digest for that other category). So
  preference resolution, quiet hours, dedup, throttle and collapse run for every
  recipient; a type-level digest would hide the rest, and is left out.

Per run, on a fresh SQLite file or a fresh PostgreSQL database, one in-process Tidings
(``build_runtime`` + ``create_app``, the worker off) takes the preferences and the events
through its HTTP API (``httpx.ASGITransport``, batches of 500, the two types' batches
alternating), which is not timed. Then the script does the worker's job by hand: it
claims jobs from the queue, hands the ``plan`` jobs to ``Pipeline.plan`` (one job, i.e.
one batch request's events, per call by default) and times only that call; the other jobs
it claims (emails, timers) are completed unrun. A few warm-up events of each type are
planned first, untimed.

Reported per store and type: notifications (recipient decisions) per second, channel
decisions per second (two channels each), the CPU of this process and of the database's
PostgreSQL backends during the timed calls, the median of the runs with their spread, and
the rules/plain ratio taken within each run.

    .venv/bin/python bench/planner_rules.py                       # both stores, 3 runs
    .venv/bin/python bench/planner_rules.py --db postgres --runs 5 --events 4000
    .venv/bin/python bench/planner_rules.py --db sqlite --runs 1 --profile /tmp/plan.txt
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import platform
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import httpx
import orjson
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    PG_HOST,
    PG_PORT,
    PG_USER,
    PgCpu,
    Zipf,
    code_line,
    install_uvloop,
    machine_busy_seconds,
    machine_line,
    summary,
)
from tidings.app.asgi import create_app
from tidings.app.runtime import Runtime
from tidings.app.wiring import build_runtime
from tidings.events.jobs import PLAN_JOB
from tidings.kit import migrate, tables
from tidings.kit.queue import Job
from tidings.kit.settings import Settings

PLAIN = "bench.plain"
RULES = "bench.rules"
TYPES = (PLAIN, RULES)
CHANNELS = 2
TENANT = {PLAIN: "plain-co", RULES: "acme"}
POOL_PREFIX = {PLAIN: "p-", RULES: "u-"}
ZONES = (
    "Europe/Paris",
    "America/New_York",
    "Asia/Tokyo",
    "America/Sao_Paulo",
    "Australia/Sydney",
    "Asia/Kolkata",
)
WORKER_ID = "bench-planner"
LEASE = dt.timedelta(minutes=10)

# ---------------------------------------------------------------------------- catalog

CATEGORIES = """\
categories:
  comments:
    description: Comments on boards you follow.
  mentions:
    description: Someone mentioned you.
"""

TYPE_HEAD = """\
key: {key}
category: comments
priority: normal
description: A comment on a board you follow.
schema:
  type: object
  required: [board, comment]
  properties:
    board:
      type: object
      required: [id, name]
      properties: {{id: {{type: string}}, name: {{type: string}}}}
    comment:
      type: object
      required: [id, text]
      properties: {{id: {{type: string}}, text: {{type: string, maxLength: 5000}}}}
example:
  board: {{id: b-1, name: Roadmap}}
  comment: {{id: c-1, text: Looks good}}
"""

RULES_BLOCK = """\
rules:
  dedup: {key: "{{ data.comment.id }}", window: 10m}
  collapse:
    key: "{{ data.board.id }}"
    title: >-
      {{ group.actors[0].name }}{% if group.others == 1 %} and 1 other{% elif group.others %}
      and {{ group.others }} others{% endif %} commented on {{ data.board.name }}
  throttle: {limit: 50, window: 1h, per: channel, over: digest}
  email_if_unseen: 15m
  max_age: 1h
"""

CHANNELS_BLOCK = """\
channels:
  in_app:
    title: "{{ actor.name }} commented on {{ data.board.name }}"
    body: "{{ data.comment.text | truncate(200) }}"
    action_url: "/boards/{{ data.board.id }}#comment-{{ data.comment.id }}"
  email:
    subject: "{{ actor.name }} commented on {{ data.board.name }}"
    html: |
      <!doctype html>
      <html lang="en"><head><meta charset="utf-8"><title>{{ subject }}</title></head>
      <body><p>{{ actor.name }} wrote on {{ data.board.name }}:</p>
      <blockquote>{{ data.comment.text }}</blockquote>
      <p><a href="https://app.example.com/boards/{{ data.board.id }}">Open the board</a></p>
      </body></html>
"""


def write_catalog(folder: Path) -> Path:
    """The two benchmark types and their categories, as YAML files in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "categories.yaml").write_text(CATEGORIES)
    for key, rules in ((PLAIN, ""), (RULES, RULES_BLOCK)):
        (folder / f"{key}.yaml").write_text(TYPE_HEAD.format(key=key) + rules + CHANNELS_BLOCK)
    return folder


# ---------------------------------------------------------------------------- workload

TENANT_CHOICES: dict[str, Any] = {
    "channels": {"email": False},
    "categories": {"mentions": {"digest": {"cadence": "hourly"}}},
}

_FILLER = (
    "Looks good to me; the numbers in the second section still need a source, and the "
    "timeline slips if design review moves again. Let us talk it through on Thursday. "
) * 10


def user_choices(user: int) -> dict[str, Any]:
    """A recipient's preference document: quiet nights in their zone, comments by email
    (over the tenant's email off), mentions in a daily digest."""
    return {
        "categories": {
            "comments": {"channels": {"email": True}},
            "mentions": {"digest": {"cadence": "daily", "hour": 8}},
        },
        "quiet_hours": {"start": "22:00", "end": "07:00", "timezone": ZONES[user % len(ZONES)]},
    }


def recipient(type_key: str, user: int) -> dict[str, Any]:
    prefix = POOL_PREFIX[type_key]
    return {
        "id": f"{prefix}{user}",
        "email": f"{prefix}{user}@example.com",
        "name": f"User {user}",
        "locale": "en",
        "timezone": ZONES[user % len(ZONES)],
    }


@dataclass
class Workload:
    """Batches of one type each, in the order they are sent, and the warm-up batches."""

    warm: list[tuple[str, list[dict[str, Any]]]]
    batches: list[tuple[str, list[dict[str, Any]]]]
    data_bytes: int
    event_bytes: int


def make_events(type_key: str, count: int, args: argparse.Namespace, tag: str) -> list[Any]:
    """``count`` comment events of one type; ``args.duplicates`` of them repeat an earlier
    one (same comment, board, actor and recipients; a new idempotency key)."""
    rng = random.Random(f"{args.seed}-{type_key}-{tag}")
    zipf = Zipf(args.users, args.zipf, rng)
    events: list[dict[str, Any]] = []
    for i in range(count):
        if events and rng.random() < args.duplicates:
            event = orjson.loads(orjson.dumps(rng.choice(events)))
        else:
            event = new_event(type_key, i, rng, zipf, args)
        event["idempotency_key"] = f"{tag}-{type_key}-{i}"
        events.append(event)
    return events


def new_event(
    type_key: str, seq: int, rng: random.Random, zipf: Zipf, args: argparse.Namespace
) -> dict[str, Any]:
    users: dict[int, None] = {}
    while len(users) < args.recipients:
        users.update(dict.fromkeys(zipf.sample(args.recipients - len(users))))
    actor = rng.randrange(1, args.users + 1)
    board = rng.randrange(args.boards)
    data: dict[str, Any] = {
        "board": {"id": f"b-{board}", "name": f"Board {board}: roadmap 2026"},
        "comment": {"id": f"c-{seq}", "text": ""},
    }
    data["comment"]["text"] = _FILLER[: max(0, args.data_bytes - len(orjson.dumps(data)))]
    return {
        "type": type_key,
        "idempotency_key": "",
        "tenant": TENANT[type_key],
        "actor": {"id": f"{POOL_PREFIX[type_key]}{actor}", "name": f"User {actor}"},
        "recipients": [recipient(type_key, user) for user in users],
        "data": data,
    }


def build_workload(args: argparse.Namespace) -> Workload:
    """Both types' events cut in batches, interleaved plain, rules, plain, rules..."""
    per_type = {t: make_events(t, args.events, args, "run") for t in TYPES}
    warm = [(t, make_events(t, args.warm, args, "warm")) for t in TYPES]
    batches = []
    for start in range(0, args.events, args.batch):
        batches += [(t, per_type[t][start : start + args.batch]) for t in TYPES]
    sample = per_type[RULES][:200]
    return Workload(
        warm=warm,
        batches=batches,
        data_bytes=round(statistics.mean(len(orjson.dumps(e["data"])) for e in sample)),
        event_bytes=round(statistics.mean(len(orjson.dumps(e)) for e in sample)),
    )


# ---------------------------------------------------------------------------- deployment


async def _pg_admin(sql: str) -> None:
    conn = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, database="postgres")
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@dataclass
class Store:
    """A migrated, empty database for one run: its settings and, on PostgreSQL, its name."""

    settings: Settings
    pg_name: str | None


@contextlib.asynccontextmanager
async def fresh_store(db: str, catalog: Path) -> AsyncIterator[Store]:
    """A fresh SQLite file or PostgreSQL database, migrated; removed afterwards."""
    data_dir = Path(tempfile.mkdtemp(prefix="tidings-bench-plan-"))
    pg_name = f"tidings_bench_{uuid.uuid4().hex[:12]}" if db == "postgres" else None
    url = f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/{pg_name}" if pg_name else None
    settings = Settings(
        data_dir=data_dir,
        database_url=url,
        catalog=catalog,
        secret="bench-" + uuid.uuid4().hex * 2,
        worker_enabled=False,
    )
    try:
        if pg_name:
            await _pg_admin(f'CREATE DATABASE "{pg_name}"')
        await asyncio.to_thread(migrate.upgrade, settings.resolved_database_url)
        yield Store(settings, pg_name)
    finally:
        if pg_name:
            with contextlib.suppress(Exception):
                await _pg_admin(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')
        shutil.rmtree(data_dir, ignore_errors=True)


class Api:
    """The producer's side of the in-process HTTP API."""

    def __init__(self, client: httpx.AsyncClient, key: str) -> None:
        self._client = client
        self._headers = {"Authorization": f"Bearer {key}"}

    async def put(self, path: str, body: dict[str, Any]) -> None:
        response = await self._client.put(path, json=body, headers=self._headers)
        if response.status_code != 200:
            raise RuntimeError(f"PUT {path} answered {response.status_code}: {response.text}")

    async def publish(self, events: list[dict[str, Any]]) -> list[str]:
        """Send one batch; returns the new events' ids."""
        response = await self._client.post(
            "/v1/events/batch",
            content=orjson.dumps({"events": events}),
            headers={**self._headers, "Content-Type": "application/json"},
        )
        if response.status_code != 202:
            raise RuntimeError(f"batch answered {response.status_code}: {response.text[:500]}")
        return [e["event_id"] for e in response.json()["events"] if not e["replayed"]]


async def set_preferences(api: Api, args: argparse.Namespace) -> None:
    """The rules tenant's defaults, and a document for every user of its pool."""
    await api.put(f"/v1/tenants/{TENANT[RULES]}/preferences", TENANT_CHOICES)
    gate = asyncio.Semaphore(8)

    async def one(user: int) -> None:
        async with gate:
            await api.put(
                f"/v1/users/{POOL_PREFIX[RULES]}{user}/preferences?tenant={TENANT[RULES]}",
                user_choices(user),
            )

    await asyncio.gather(*(one(user) for user in range(1, args.users + 1)))


# ---------------------------------------------------------------------------- measuring


@dataclass
class Timed:
    """What the timed ``Pipeline.plan`` calls of one type did and took."""

    notifications: int = 0
    calls: int = 0
    seconds: float = 0.0
    cpu: float = 0.0
    pg_cpu: float = 0.0

    @property
    def rate(self) -> float:
        return self.notifications / self.seconds if self.seconds else float("nan")

    @property
    def cpu_per_notification(self) -> float:
        """CPU seconds of this process (every thread) per notification."""
        return self.cpu / self.notifications if self.notifications else float("nan")


@dataclass
class RunResult:
    timed: dict[str, Timed]
    machine_busy: float
    ingest_seconds: float
    outcomes: dict[str, Counter[str]] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.timed[RULES].rate / self.timed[PLAIN].rate

    @property
    def cpu_ratio(self) -> float:
        """CPU per notification, rules over plain: steadier than the rates on a busy
        machine, but blind to time spent waiting for PostgreSQL."""
        return self.timed[RULES].cpu_per_notification / self.timed[PLAIN].cpu_per_notification


@dataclass
class Published:
    """Which type each published event is of, how many recipients it has, and which
    events only warm the process up."""

    type_of: dict[str, str] = field(default_factory=dict)
    recipients: dict[str, int] = field(default_factory=dict)
    warm: set[str] = field(default_factory=set)


async def publish_all(api: Api, workload: Workload) -> Published:
    published = Published()
    for warm, batches in ((True, workload.warm), (False, workload.batches)):
        for type_key, events in batches:
            ids = await api.publish(events)
            for event_id, event in zip(ids, events, strict=True):
                published.type_of[event_id] = type_key
                published.recipients[event_id] = len(event["recipients"])
                if warm:
                    published.warm.add(event_id)
    return published


PlanHook = Callable[[str, bool], contextlib.AbstractContextManager[None]]


@contextlib.contextmanager
def no_hook(_type_key: str, _warm: bool) -> Iterator[None]:
    yield


async def plan_everything(
    runtime: Runtime,
    published: Published,
    store: Store,
    claim_limit: int,
    hook: PlanHook = no_hook,
) -> dict[str, Timed]:
    """Claim until no plan job is left; time each type's ``Pipeline.plan`` calls and drop
    every other job unrun."""
    timed = {t: Timed() for t in TYPES}
    while True:
        jobs = await runtime.queue.claim(WORKER_ID, claim_limit, LEASE)
        plan_jobs = [job for job in jobs if job.kind == PLAN_JOB]
        others = [job for job in jobs if job.kind != PLAN_JOB]
        if others:
            async with runtime.db.transaction() as conn:
                await runtime.queue.complete(conn, others)
        for group in by_type(plan_jobs, published):
            await plan_timed(runtime, group, published, store, timed, hook)
        if not plan_jobs and await plan_jobs_left(runtime) == 0:
            return timed
        if not jobs:
            raise RuntimeError("plan jobs are left but none can be claimed")


def by_type(jobs: Sequence[Job], published: Published) -> list[list[Job]]:
    """Plan jobs grouped by the type of their events (a batch holds one type), warm-up
    jobs apart, in the order they were claimed."""
    groups: dict[tuple[str, bool], list[Job]] = {}
    for job in jobs:
        first = job.payload["events"][0]
        groups.setdefault((published.type_of[first], first in published.warm), []).append(job)
    return list(groups.values())


async def plan_timed(
    runtime: Runtime,
    jobs: list[Job],
    published: Published,
    store: Store,
    timed: dict[str, Timed],
    hook: PlanHook,
) -> None:
    events = [event_id for job in jobs for event_id in job.payload["events"]]
    type_key = published.type_of[events[0]]
    warm = events[0] in published.warm
    pg = PgCpu(store.pg_name) if store.pg_name else None
    if pg:
        await pg.start()
    with hook(type_key, warm):
        cpu0, t0 = time.process_time(), time.perf_counter()
        await runtime.pipeline.plan(jobs)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    if pg:
        await pg.stop()
    if warm:
        return
    entry = timed[type_key]
    entry.notifications += sum(published.recipients[e] for e in events)
    entry.calls += 1
    entry.seconds += seconds
    entry.cpu += cpu
    entry.pg_cpu += pg.seconds if pg else 0.0


async def plan_jobs_left(runtime: Runtime) -> int:
    async with runtime.db.reader() as conn:
        query = sa.select(sa.func.count()).where(tables.jobs.c.kind == PLAN_JOB)
        return int((await conn.execute(query)).scalar_one())


async def outcomes(runtime: Runtime) -> dict[str, Counter[str]]:
    """Per type, how its deliveries were decided: ``channel state reason`` (and
    ``collapsed`` for in-app items merged into another), counted."""
    d = tables.every_delivery()
    collapsed = d.c.detail.like("collapsed into %")
    query = sa.select(
        d.c.type, d.c.channel, d.c.state, d.c.reason, collapsed, sa.func.count()
    ).group_by(d.c.type, d.c.channel, d.c.state, d.c.reason, collapsed)
    found: dict[str, Counter[str]] = {t: Counter() for t in TYPES}
    async with runtime.db.reader() as conn:
        for type_key, channel, state, reason, merged, count in await conn.execute(query):
            label = f"{channel} {state}" + (f" {reason}" if reason else "")
            found[type_key][label + (" collapsed" if merged else "")] += count
    return found


async def one_run(
    db: str,
    args: argparse.Namespace,
    workload: Workload,
    catalog: Path,
    hook: PlanHook = no_hook,
) -> RunResult:
    """A fresh store and Tidings: preferences and events in, then every plan job planned."""
    async with fresh_store(db, catalog) as store:
        runtime = build_runtime(store.settings)
        app = create_app(runtime=runtime)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
                _key, secret = await runtime.auth.create_key("bench", ["*", "preferences:write"])
                api = Api(client, secret)
                t0 = time.perf_counter()
                await set_preferences(api, args)
                published = await publish_all(api, workload)
                ingest_seconds = time.perf_counter() - t0
                busy0 = machine_busy_seconds()
                timed = await plan_everything(runtime, published, store, args.claim, hook)
                busy1 = machine_busy_seconds()
                await check_planned(runtime, published)
                decided = await outcomes(runtime)
    busy = (busy1[0] - busy0[0]) / max(1e-9, busy1[1] - busy0[1])
    return RunResult(timed, busy, ingest_seconds, decided)


async def check_planned(runtime: Runtime, published: Published) -> None:
    """Every recipient of every event has its notification (a delivery on some channel):
    nothing was skipped."""
    d = tables.every_delivery()
    notifications = sa.select(d.c.event_id, d.c.user_id).distinct().subquery()
    async with runtime.db.reader() as conn:
        query = sa.select(sa.func.count()).select_from(notifications)
        found = int((await conn.execute(query)).scalar_one())
    expected = sum(published.recipients.values())
    if found != expected:
        raise RuntimeError(f"{found:,} notifications planned, {expected:,} expected")


# ---------------------------------------------------------------------------- profile


def profiled(out: Path) -> tuple[PlanHook, Callable[[], str]]:
    """A hook that samples each type's timed plan calls with pyinstrument, and a function
    that writes the reports to ``out`` and returns their summaries."""
    from pyinstrument import Profiler

    profilers = {t: Profiler(interval=0.001, async_mode="enabled") for t in TYPES}

    @contextlib.contextmanager
    def hook(type_key: str, warm: bool) -> Iterator[None]:
        if warm:
            yield
            return
        profilers[type_key].start()
        try:
            yield
        finally:
            profilers[type_key].stop()

    def report() -> str:
        texts = [p.output_text(unicode=True, color=False) for p in profilers.values()]
        out.write_text("\n".join(f"{t}\n{text}" for t, text in zip(TYPES, texts, strict=True)))
        return "\n".join(
            f"{t}:\n{profile_summary(profilers[t].last_session)}" for t in reversed(TYPES)
        )

    return hook, report


_LIBRARIES = (
    ("/tidings/", "tidings"),
    ("/sqlalchemy/", "SQLAlchemy"),
    ("/asyncpg/", "asyncpg"),
    ("/aiosqlite/", "aiosqlite"),
    ("/jinja2/", "Jinja2"),
    ("/markupsafe/", "Jinja2"),
    ("/uuid", "uuid"),
    ("/zoneinfo/", "zoneinfo"),
    ("/json/", "json"),
    # The event loop's own frames: with uvloop, mostly the loop waiting for I/O.
    ("/asyncio/", "event loop (mostly waiting: the database, the CPU)"),
    ("/uvloop/", "event loop (mostly waiting: the database, the CPU)"),
    ("<built-in>", "built-in functions"),
    ("/python3.", "standard library, other"),
)


def _library(frame: Any) -> str:
    path = frame.file_path or ""
    return next((label for part, label in _LIBRARIES if part in path), "other")


def _name(frame: Any) -> str:
    """``Class.function (package/module.py)`` of a Tidings frame."""
    name = str(frame.function)
    if frame.class_name and "." not in name:
        name = f"{frame.class_name}.{name}"
    return f"{name} ({(frame.file_path or '').rpartition('/tidings/')[2]})"


def profile_summary(session: Any, top: int = 12) -> str:
    """Tidings functions by inclusive time (outermost occurrence), libraries by self time,
    time awaiting the database apart."""
    root = session.root_frame() if session else None
    if root is None:
        return "    (no samples)"
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()

    def walk(frame: Any, library: str, open_names: frozenset[str]) -> None:
        if frame.is_synthetic_leaf:
            awaiting = frame.identifier == "[await]"
            own["awaiting (the database)" if awaiting else library] += frame.time
            return
        library = _library(frame) if frame.file_path else library
        own[library] += frame.time - sum(child.time for child in frame.children)
        if library == "tidings":
            name = _name(frame)
            if name not in open_names:
                inclusive[name] += frame.time
                open_names = open_names | {name}
        for child in frame.children:
            walk(child, library, open_names)

    walk(root, "other", frozenset())
    total = root.time
    lines = [f"  sampled {total:.2f} s of timed plan calls", "  Tidings, inclusive:"]
    lines += [f"    {t / total:6.1%}  {name}" for name, t in inclusive.most_common(top)]
    lines.append("  by library, self time:")
    lines += [f"    {t / total:6.1%}  {name}" for name, t in own.most_common() if t > 0]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- report


def describe(result: RunResult) -> str:
    parts = []
    for type_key in TYPES:
        t = result.timed[type_key]
        text = (
            f"{type_key} {t.rate:,.0f} notifications/s ({t.notifications:,} in {t.seconds:.2f} s, "
            f"{t.calls} calls; CPU this process {t.cpu / t.seconds:.0%}"
        )
        if t.pg_cpu:
            text += f", PostgreSQL backends {t.pg_cpu / t.seconds:.0%}"
        parts.append(text + ")")
    return (
        "; ".join(parts) + f"; rules/plain {result.ratio:.2f}; "
        f"machine {result.machine_busy:.0%} busy; ingest (untimed) {result.ingest_seconds:.1f} s"
    )


def describe_outcomes(decided: Counter[str]) -> str:
    total = sum(decided.values())
    return ", ".join(f"{label} {count / total:.1%}" for label, count in decided.most_common())


def report_engine(db: str, results: list[RunResult]) -> list[str]:
    """The engine's medians, printed, and its rows for the closing table."""
    rows = []
    print(f"\n{db}: medians of {len(results)} runs")
    for type_key in TYPES:
        rates = [r.timed[type_key].rate for r in results]
        cpu = [r.timed[type_key].cpu_per_notification * 1000 for r in results]
        print(f"  {type_key} notifications/s:      {summary(rates)}")
        print(f"  {type_key} channel decisions/s:  {summary([x * CHANNELS for x in rates])}")
        print(f"  {type_key} CPU ms/notification:  {summary(cpu, '{:.3f}')}")
        rows.append(
            f"| {db} | {type_key} | {summary(rates)} | "
            f"{summary([x * CHANNELS for x in rates])} | {statistics.median(cpu):.3f} |"
        )
    ratios = [r.ratio for r in results]
    cpu_ratios = [r.cpu_ratio for r in results]
    print(f"  rules/plain, rate:               {summary(ratios, '{:.2f}')}")
    print(f"  rules/plain, CPU per notification: {summary(cpu_ratios, '{:.2f}')}")
    rows.append(
        f"| {db} | rules/plain | {summary(ratios, '{:.2f}')} | | {summary(cpu_ratios, '{:.2f}')} |"
    )
    return rows


async def run_engine(
    db: str, args: argparse.Namespace, workload: Workload, catalog: Path
) -> list[RunResult]:
    results = []
    for run in range(1, args.runs + 1):
        result = await one_run(db, args, workload, catalog)
        results.append(result)
        print(f"{db} run {run}: {describe(result)}", flush=True)
        if run == 1:
            for type_key in TYPES:
                print(f"  decisions of {type_key}: {describe_outcomes(result.outcomes[type_key])}")
    return results


def versions(dbs: Sequence[str]) -> str:
    text = f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}"
    if "postgres" in dbs:

        async def query() -> str:
            conn = await asyncpg.connect(
                host=PG_HOST, port=PG_PORT, user=PG_USER, database="postgres"
            )
            try:
                return str(await conn.fetchval("SHOW server_version"))
            finally:
                await conn.close()

        text += f", PostgreSQL {asyncio.run(query())}"
    return text


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--events", type=int, default=2000, help="events per type and run")
    parser.add_argument("--recipients", type=int, default=5, help="recipients per event")
    parser.add_argument("--users", type=int, default=2000, help="users in each type's pool")
    parser.add_argument("--zipf", type=float, default=1.1, help="Zipf exponent of recipients")
    parser.add_argument("--boards", type=int, default=50, help="boards (collapse keys)")
    parser.add_argument(
        "--duplicates", type=float, default=0.2, help="share of events repeating a dedup key"
    )
    parser.add_argument("--data-bytes", type=int, default=400, help="JSON size of `data`")
    parser.add_argument("--batch", type=int, default=500, help="events per batch request")
    parser.add_argument(
        "--claim", type=int, default=1, help="jobs claimed at a time (one plan job = one batch)"
    )
    parser.add_argument("--warm", type=int, default=20, help="untimed warm-up events per type")
    parser.add_argument(
        "--runs", type=int, default=3, help="runs per store, each fresh (0: only --profile)"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="FILE",
        help="after the runs, one more on the first store with pyinstrument sampling the "
        "timed plan calls; its reports to FILE, a summary per type printed",
    )
    return parser.parse_args()


async def main_async(args: argparse.Namespace, dbs: list[str], workload: Workload) -> None:
    with tempfile.TemporaryDirectory(prefix="tidings-bench-catalog-") as folder:
        catalog = write_catalog(Path(folder))
        rows: list[str] = []
        for db in dbs:
            results = await run_engine(db, args, workload, catalog)
            rows += report_engine(db, results) if results else []
        if rows:
            print("\n| store | type | notifications/s | channel decisions/s | CPU ms/notif. |")
            print("|---|---|---|---|---|")
            print("\n".join(rows))
        if args.profile:
            hook, report = profiled(args.profile)
            result = await one_run(dbs[0], args, workload, catalog, hook)
            print(f"\nprofiled run on {dbs[0]} (not in the medians): {describe(result)}")
            print(f"pyinstrument report: {args.profile}\n{report()}")


def main() -> None:
    args = parse_args()
    dbs = ["sqlite", "postgres"] if args.db == "both" else [args.db]
    workload = build_workload(args)
    print(
        f"Planner, every rule on vs none: {args.events:,} events x {args.recipients} recipients "
        f"per type ({args.events * args.recipients:,} notifications, "
        f"{args.events * args.recipients * CHANNELS:,} channel decisions), recipients from "
        f"{args.users:,} users Zipf({args.zipf}), {args.duplicates:.0%} repeated dedup keys, "
        f"{args.boards} boards, data ~{workload.data_bytes} B (event with its recipients' "
        f"profiles ~{workload.event_bytes} B), batches of {args.batch}, {args.claim} job(s) "
        f"per claim; {args.runs} runs on {', '.join(dbs)}"
    )
    print(f"machine: {machine_line()}")
    print(f"versions: {versions(dbs)}")
    print(code_line())
    install_uvloop()
    asyncio.run(main_async(args, dbs, workload))


if __name__ == "__main__":
    main()
