"""Shared helpers of the benchmarks: a throwaway Tidings deployment, workloads, statistics.

Not a benchmark itself. Every script in ``bench/`` starts the server it measures as a
subprocess, on a fresh data folder (SQLite) or a fresh PostgreSQL database, and removes
both afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TIDINGS = str(BIN / "tidings")
PG_HOST = os.environ.get("BENCH_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("BENCH_PG_PORT", "5432"))
PG_USER = os.environ.get("BENCH_PG_USER", "postgres")
CLK_TCK = os.sysconf("SC_CLK_TCK")
BENCH_SCOPES = "users:read,users:write,topics:read,topics:write,preferences:read,preferences:write"
"""What the workloads' key does besides publishing: store profiles, subscribe topics."""


# ---------------------------------------------------------------------------- statistics


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), nearest-rank on the sorted values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def summary(values: Sequence[float], fmt: str = "{:,.0f}") -> str:
    """``median (min, max, spread ±x %)`` of several runs."""
    if not values:
        return "n/a"
    med = statistics.median(values)
    low, high = min(values), max(values)
    spread = (high - low) / 2 / med * 100 if med else 0.0
    return (
        f"{fmt.format(med)} (min {fmt.format(low)}, max {fmt.format(high)}, "
        f"±{spread:.0f} %, n={len(values)})"
    )


# ---------------------------------------------------------------------------- workload


class Zipf:
    """Ranks 1..n drawn with P(k) ∝ k^-s."""

    def __init__(self, n: int, s: float, rng: random.Random) -> None:
        self._population = range(1, n + 1)
        self._cum = list(itertools.accumulate(1.0 / k**s for k in self._population))
        self._rng = rng

    def sample(self, k: int) -> list[int]:
        return self._rng.choices(self._population, cum_weights=self._cum, k=k)


_FILLER = (
    "Looks good to me; the numbers in the second section still need a source, and the "
    "timeline slips if design review moves again. Let us talk it through on Thursday. "
) * 10


def comment_event(
    key: str, recipient: str, actor: int, seq: int, target_bytes: int = 500
) -> dict[str, Any]:
    """A ``comment.created`` event whose JSON is about ``target_bytes`` long (W1 shape)."""
    event: dict[str, Any] = {
        "type": "comment.created",
        "idempotency_key": key,
        "actor": {"id": f"u-{actor}", "name": f"User {actor}"},
        "recipients": [{"id": recipient}],
        "data": {
            "board": {"id": f"b-{seq % 97}", "name": "Roadmap 2026"},
            "comment": {"id": f"c-{seq}", "text": ""},
        },
    }
    base = len(_dumps(event))
    event["data"]["comment"]["text"] = _FILLER[: max(0, target_bytes - base)]
    return event


def _dumps(value: Any) -> bytes:
    import orjson

    return orjson.dumps(value)


# ---------------------------------------------------------------------------- processes


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A loopback port free now and not handed out before by this process: two servers
    started one after the other must not both be given the port the first has not
    bound yet."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads) so far; 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds per thread name of a process (threads of one name summed)."""
    found: dict[str, float] = {}
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/stat") as handle:
                    raw = handle.read()
            except OSError:
                continue
            # Python threads keep the process's name; only the main thread is told apart.
            name = "main thread" if tid == str(pid) else "other threads"
            fields = raw.rsplit(")", 1)[1].split()
            found[name] = found.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / CLK_TCK
    return found


def machine_busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    with open("/proc/stat") as handle:
        parts = [int(x) for x in handle.readline().split()[1:]]
    idle = parts[3] + parts[4]
    total = sum(parts[:8])
    return (total - idle) / CLK_TCK, total / CLK_TCK


def process_tree(pid: int) -> list[int]:
    """``pid`` and every process descended from it, alive now (``tidings serve --workers N``
    runs its workers as child processes: their CPU is the server's too)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


@dataclass
class CpuMeter:
    """CPU used by some processes and by the whole machine between start() and stop().

    Each named pid counts with its descendants (a server's worker processes); a process
    that started during the interval counts from zero, one that ended is lost.
    """

    pids: dict[str, int]
    wall: float = 0.0
    used: dict[str, float] = field(default_factory=dict)
    processes: dict[str, list[float]] = field(default_factory=dict)
    threads: dict[str, float] = field(default_factory=dict)
    machine_busy: float = 0.0
    _start: dict[str, dict[int, float]] = field(default_factory=dict)
    _threads0: dict[str, float] = field(default_factory=dict)
    _machine0: tuple[float, float] = (0.0, 0.0)
    _t0: float = 0.0

    def start(self) -> None:
        self._t0 = time.perf_counter()
        self._start = {
            name: {p: cpu_seconds(p) for p in process_tree(pid)} for name, pid in self.pids.items()
        }
        if "server" in self.pids:
            self._threads0 = thread_cpu_seconds(self.pids["server"])
        self._machine0 = machine_busy_seconds()

    def stop(self) -> None:
        self.wall = time.perf_counter() - self._t0
        for name, pid in self.pids.items():
            before = self._start.get(name, {})
            each = [max(0.0, cpu_seconds(p) - before.get(p, 0.0)) for p in process_tree(pid)]
            self.processes[name] = each
            self.used[name] = sum(each)
        if "server" in self.pids:
            now = thread_cpu_seconds(self.pids["server"])
            self.threads = {k: v - self._threads0.get(k, 0.0) for k, v in now.items()}
        busy, total = machine_busy_seconds()
        self.machine_busy = (busy - self._machine0[0]) / max(1e-9, total - self._machine0[1])

    def share(self, name: str) -> float:
        """CPU of ``name`` (with its descendants) over the interval, in cores (1.0 = one)."""
        return self.used.get(name, 0.0) / self.wall if self.wall else 0.0

    def describe(self) -> str:
        """'server 98 % (main 93 %, aiosqlite 5 %), postgres 40 %, machine 85 % busy'."""
        parts = []
        for name, secs in self.used.items():
            text = f"{name} {secs / self.wall * 100:.0f} %"
            each = self.processes.get(name, [])
            if len(each) > 1:
                inner = " + ".join(f"{v / self.wall * 100:.0f}" for v in each)
                text += f" ({len(each)} processes: {inner})"
            elif name == "server" and self.threads:
                top = sorted(self.threads.items(), key=lambda kv: -kv[1])[:3]
                inner = ", ".join(f"{k} {v / self.wall * 100:.0f} %" for k, v in top if v > 0)
                text += f" ({inner})"
            parts.append(text)
        parts.append(f"machine {self.machine_busy * 100:.0f} % busy of {os.cpu_count()} cores")
        return "CPU: " + ", ".join(parts)


async def backend_pids_async(db_name: str) -> list[int]:
    conn = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, database="postgres")
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            db_name,
        )
    finally:
        await conn.close()
    return [int(r["pid"]) for r in rows]


class PgCpu:
    """CPU used by the PostgreSQL backends of one database (the server's own connections).

    Shared background processes (WAL writer, checkpointer) are not counted: the server is
    shared with other engineers and their share cannot be told apart. Nor are the
    backends in ``exclude`` (the benchmark's own pollers).
    """

    def __init__(self, db_name: str, exclude: Sequence[int] = ()) -> None:
        self.db_name = db_name
        self.exclude = set(exclude)
        self._start: dict[int, float] = {}
        self.seconds = 0.0

    async def start(self) -> None:
        pids = await backend_pids_async(self.db_name)
        self._start = {pid: cpu_seconds(pid) for pid in pids if pid not in self.exclude}

    async def stop(self) -> None:
        total = 0.0
        for pid in await backend_pids_async(self.db_name):
            if pid not in self.exclude:
                total += cpu_seconds(pid) - self._start.get(pid, 0.0)
        self.seconds = total


def user_token(secret: str, user_id: str, hours: float = 2.0) -> str:
    """An end-user token for ``user_id``, as ``tidings token`` or an application mints it
    (an HS256 JWT for the audience ``tidings:user``), without importing Tidings."""
    import datetime as dt

    import jwt

    now = dt.datetime.now(dt.UTC)
    claims = {
        "sub": user_id,
        "aud": "tidings:user",
        "iat": now,
        "exp": now + dt.timedelta(hours=hours),
    }
    return jwt.encode(claims, secret, algorithm="HS256")


# ---------------------------------------------------------------------------- code measured

# Others edit src/ while benchmarks run; ``use_code(REF)`` measures a committed revision
# instead: its src/ and catalog/ are extracted to a temporary folder that goes first on
# the servers' PYTHONPATH (ahead of the editable install of the working tree).
_CODE: dict[str, str] = {}


def use_code(ref: str) -> str:
    """Measure commit ``ref`` (e.g. HEAD) instead of the working tree; returns its hash."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", ref], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    target = Path(tempfile.mkdtemp(prefix=f"tidings-bench-code-{commit}-"))
    archive = subprocess.run(
        ["git", "archive", commit, "src", "catalog"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    _CODE.update(commit=commit, dir=str(target))
    import atexit

    atexit.register(shutil.rmtree, target, True)
    return commit


def code_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` with the snapshot chosen by ``use_code`` first on PYTHONPATH, if any."""
    if _CODE:
        env = dict(env)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (_CODE["dir"] + "/src", env.get("PYTHONPATH", "")) if p
        )
        env["TIDINGS_CATALOG"] = _CODE["dir"] + "/catalog"
    return env


# ---------------------------------------------------------------------------- deployment


class Deployment:
    """One throwaway Tidings: data folder, optional PostgreSQL database, key, server.

    Use as a context manager; ``start()`` launches ``tidings serve`` (or ``worker``).
    """

    def __init__(
        self,
        db: str,
        *,
        worker: bool = True,
        log_level: str = "warning",
        patches: Sequence[str] = (),
    ) -> None:
        if db not in ("sqlite", "postgres"):
            raise ValueError(db)
        self.db = db
        self.patches = list(patches)
        self.worker = worker
        self.data_dir = Path(tempfile.mkdtemp(prefix="tidings-bench-"))
        self.port = free_port()
        self.pg_name = f"tidings_bench_{uuid.uuid4().hex[:12]}" if db == "postgres" else None
        self.secret = "bench-" + uuid.uuid4().hex + uuid.uuid4().hex
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
        self.env.update(
            TIDINGS_DATA_DIR=str(self.data_dir),
            TIDINGS_PORT=str(self.port),
            TIDINGS_SECRET=self.secret,
            TIDINGS_CATALOG=str(ROOT / "catalog"),
            TIDINGS_LOG_LEVEL=log_level,
            TIDINGS_WORKER_ENABLED="true" if worker else "false",
        )
        # BENCH_TIDINGS_X=… sets TIDINGS_X for the measured server (a setting under test).
        self.env.update(
            (k.removeprefix("BENCH_"), v)
            for k, v in os.environ.items()
            if k.startswith("BENCH_TIDINGS_")
        )
        if self.pg_name:
            self.env["TIDINGS_DATABASE_URL"] = (
                f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{self.pg_name}"
            )
        self.env = code_env(self.env)
        self.key = ""
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "tidings.db"

    def __enter__(self) -> Deployment:
        try:
            self.prepare()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    def prepare(self) -> None:
        if self.pg_name:
            asyncio.run(_pg_admin(f'CREATE DATABASE "{self.pg_name}"'))
        self._cli("db", "upgrade")
        # Publishing every type, and keeping the profiles and topics the workloads set up;
        # code from before capability scopes (--code) takes no --scope and needs none.
        create = ("keys", "create", "--name", "bench", "--types", "*")
        try:
            out = self._cli(*create, "--scope", BENCH_SCOPES)
        except RuntimeError:
            out = self._cli(*create)
        self.key = out.strip().splitlines()[-1]

    def _cli(self, *args: str) -> str:
        done = subprocess.run(
            [TIDINGS, *args], env=self.env, cwd=ROOT, capture_output=True, text=True, check=False
        )
        if done.returncode:
            raise RuntimeError(f"tidings {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def start(self, command: Sequence[str] = ("serve",), timeout: float = 60.0) -> None:
        self._log = open(self.data_dir / "server.log", "ab")  # noqa: SIM115
        argv = [TIDINGS, *command]
        if self.patches:  # candidate fixes for src/, see bench/experiment_serve.py
            argv = [sys.executable, str(ROOT / "bench" / "experiment_serve.py")]
            argv += [arg for patch in self.patches for arg in ("--patch", patch)]
        self.proc = subprocess.Popen(
            argv, env=self.env, cwd=ROOT, stdout=self._log, stderr=self._log
        )
        wait_http(f"{self.base_url}/healthz", timeout, self.proc, self.data_dir / "server.log")

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def cleanup(self) -> None:
        self.stop()
        if self.pg_name:
            with contextlib.suppress(Exception):
                asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{self.pg_name}" WITH (FORCE)'))
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def server_log_tail(self, lines: int = 30) -> str:
        try:
            text = (self.data_dir / "server.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # -- direct reads of the store, beside the server

    def counter(self) -> InboxCounter:
        return InboxCounter(self)


class InboxCounter:
    """Counts rows of ``inbox_items`` straight from the database (not through the API)."""

    def __init__(self, deployment: Deployment) -> None:
        self._d = deployment
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

    async def close(self) -> None:
        if self._pg is not None:
            await self._pg.close()
        if self._sqlite is not None:
            self._sqlite.close()

    @property
    def backend_pids(self) -> list[int]:
        """The PostgreSQL backend this counter reads through (not Tidings' work)."""
        return [self._pg.get_server_pid()] if self._pg is not None else []

    async def fetch(self, sql: str) -> list[tuple[Any, ...]]:
        if self._pg is not None:
            return [tuple(r) for r in await self._pg.fetch(sql)]
        assert self._sqlite is not None
        conn = self._sqlite
        return await asyncio.to_thread(lambda: conn.execute(sql).fetchall())

    async def count(self, table: str = "inbox_items") -> int:
        return int((await self.fetch(f"SELECT count(*) FROM {table}"))[0][0])


async def _pg_admin(sql: str) -> None:
    conn = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, database="postgres")
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise RuntimeError(f"server exited with {proc.returncode}:\n{tail}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


def stop_process(proc: subprocess.Popen[Any] | None, timeout: float = 20.0) -> None:
    """SIGINT (uvicorn's graceful stop), then SIGKILL if it lingers; only our own child."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def pyspy(
    pid: int, out: Path, *, rate: int = 100, native: bool = False, subprocesses: bool = False
) -> Iterator[Path]:
    """Sample a process with py-spy (raw collapsed stacks, per thread) while the block runs;
    with ``subprocesses``, its child processes too."""
    exe = shutil.which("py-spy", path=str(BIN)) or shutil.which("py-spy")
    if exe is None:
        raise RuntimeError("py-spy is not installed: .venv/bin/pip install py-spy")
    args = [exe, "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw"]
    args += ["--threads", "--nonblocking", "-o", str(out)]
    if native:
        args.append("--native")
    if subprocesses:
        args.append("--subprocesses")
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(0.5)
    try:
        yield out
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def install_uvloop() -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def machine_line() -> str:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg()
    return f"{os.cpu_count()} cores, {model}; load average {load[0]:.2f} at start"


# ---------------------------------------------------------------------------- raw HTTP/1.1
# httpx costs about a millisecond of client CPU per request; with a hundred open streams
# beside it, the client became the bottleneck. These few lines do only what the
# benchmarks need, on plain asyncio streams.


class RawConnection:
    """One keep-alive HTTP/1.1 connection for small requests with Content-Length replies."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
        for name, value in (headers or {}).items():
            head += f"{name}: {value}\r\n"
        head += f"Content-Length: {len(body)}\r\n\r\n"
        self._writer.write(head.encode() + body)
        status_line = await self._reader.readline()
        if not status_line:
            raise ConnectionError("connection closed")
        status = int(status_line.split()[1])
        length = 0
        while True:
            line = await self._reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
        payload = await self._reader.readexactly(length) if length else b""
        return status, payload

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()
            self._writer = None


async def sse_messages(host: str, port: int, path: str) -> Any:
    """Yield (event name, data text, arrival perf_counter) from a Server-Sent Events stream
    (chunked transfer encoding, as uvicorn sends it)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n\r\n"
        writer.write(request.encode())
        status_line = await reader.readline()
        if b" 200 " not in status_line:
            raise RuntimeError(f"stream answered {status_line!r}")
        chunked = False
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            if line.lower().startswith(b"transfer-encoding:") and b"chunked" in line.lower():
                chunked = True
        buffer = b""
        while True:
            if chunked:
                size_line = await reader.readline()
                if not size_line:
                    return
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    return
                data = await reader.readexactly(size + 2)
                buffer += data[:-2]
            else:
                data = await reader.read(65536)
                if not data:
                    return
                buffer += data
            at = time.perf_counter()
            buffer = buffer.replace(b"\r\n", b"\n")
            while b"\n\n" in buffer:
                block, buffer = buffer.split(b"\n\n", 1)
                name, data_lines = "message", []
                for raw in block.decode().split("\n"):
                    if raw.startswith("event:"):
                        name = raw[6:].strip()
                    elif raw.startswith("data:"):
                        data_lines.append(raw[5:].lstrip())
                if data_lines:
                    yield name, "\n".join(data_lines), at
    finally:
        writer.close()


def code_line() -> str:
    """The commit measured, and whether src/ differed from it (others edit it meanwhile)."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    if _CODE:
        return f"code: {_CODE['commit']} (a clean snapshot of the commit, not the work tree)"
    head = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = " + uncommitted changes in src/" if git("status", "--porcelain", "src") else ""
    return f"code: {head}{dirty}"


# ---------------------------------------------------------------------------- without git


def work_tree_line() -> str:
    """The commit checked out and a fingerprint of ``src/`` and ``catalog/`` as measured.

    Reads ``.git/HEAD`` as a file (git itself is not run), and hashes the files, so two
    runs can tell whether they measured the same code while others edit the work tree.
    """
    import hashlib

    head = "unknown"
    with contextlib.suppress(OSError):
        ref = (ROOT / ".git" / "HEAD").read_text().strip()
        if ref.startswith("ref: "):
            name = ref[5:]
            path = ROOT / ".git" / name
            if path.exists():
                head = path.read_text().strip()
            else:
                packed = (ROOT / ".git" / "packed-refs").read_text().splitlines()
                head = next((ln.split()[0] for ln in packed if ln.endswith(" " + name)), head)
        else:
            head = ref
    digest = hashlib.sha256()
    files = sorted(
        p for folder in ("src", "catalog") for p in (ROOT / folder).rglob("*") if p.is_file()
    )
    for path in files:
        if "__pycache__" in path.parts:
            continue
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0")
        with contextlib.suppress(OSError):
            digest.update(path.read_bytes())
    return (
        f"code: work tree at commit {head[:7]} (read from .git/HEAD); "
        f"src/ + catalog/ sha256 {digest.hexdigest()[:12]}"
    )


def pids_named(pattern: str) -> list[int]:
    """Pids whose command line matches ``pattern`` (``pgrep -f``), this process excluded."""
    done = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True, check=False)
    return [int(p) for p in done.stdout.split() if p.strip() and int(p) != os.getpid()]


def cmdline(pid: int) -> str:
    """A process's command line, or '' if it is gone."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""
