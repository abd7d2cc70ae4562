"""Single-event ingest (``POST /v1/events``) against a bare FastAPI endpoint, same run.

Starts ``tidings serve`` (fresh SQLite folder or PostgreSQL database) and
``bench/bare_app.py`` (the same body parsed by an equivalent pydantic model, nothing
stored, 202), both under uvicorn with one worker, uvloop, httptools, access log off.
The load comes from ``wrk`` (C, one thread, a separate process): ``--connections`` requests
in flight over keep-alive connections, every request a W1-shaped ~500-byte event with a
unique idempotency key (a Lua script). The two targets alternate, bare first in odd
rounds and Tidings first in even ones, so drift of the shared machine hits both alike.
Reported: req/s of each (median and spread of the rounds), their ratio per round, wrk's
latency percentiles, non-202 answers, and the CPU of the server, of wrk, of PostgreSQL.

``--worker off`` runs Tidings with its in-process worker disabled (ingest alone; the
queued jobs simply wait); the default keeps it on, as ``tidings serve`` runs.
``--profile FILE`` adds one Tidings-only wrk run under py-spy.

Needs wrk (``apt-get install -y wrk``).

    .venv/bin/python bench/ingest_vs_bare.py --db sqlite
    .venv/bin/python bench/ingest_vs_bare.py --db postgres --rounds 5 --duration 15
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    ROOT,
    CpuMeter,
    Deployment,
    code_line,
    comment_event,
    free_port,
    machine_line,
    pyspy,
    stop_process,
    summary,
    use_code,
    wait_http,
)
from profile_summary import summarize

LUA = r"""
-- One W1-shaped event per request, each with its own idempotency key.
local counter = 0
local thread_no = 0
function setup(thread)
  thread_no = thread_no + 1
  thread:set("tno", thread_no)
end
function init(args)
  prefix = args[1] .. "-" .. tostring(tno)
  users = tonumber(args[2])
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. args[3]
  template = args[4]
end
function request()
  counter = counter + 1
  local key = prefix .. "-" .. counter
  local body = string.format(template, key, math.random(1, users), counter)
  return wrk.format(nil, "/v1/events", nil, body)
end
function done(summary, latency, requests)
  io.write(string.format(
    "RESULT requests=%d duration_us=%d connect=%d read=%d write=%d status=%d timeout=%d "
      .. "p50=%d p90=%d p99=%d max=%d\n",
    summary.requests, summary.duration, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.status, summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


@dataclass
class WrkResult:
    rate: float
    requests: int
    errors: int
    non_2xx: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    server_cpu: float
    wrk_cpu: float
    cpu: str


def body_template() -> str:
    """The W1 event as a printf template: key (%s), recipient number (%d), seq (%d)."""
    event = comment_event("KEY", "u-USER", 7, 0)
    event["data"]["comment"]["id"] = "c-SEQ"
    text = orjson.dumps(event).decode()
    text = text.replace("%", "%%")
    return text.replace('"KEY"', '"%s"').replace('"u-USER"', '"u-%d"').replace('"c-SEQ"', '"c-%d"')


def run_wrk(
    url: str,
    seconds: float,
    args: argparse.Namespace,
    lua: Path,
    key: str,
    pids: dict[str, int],
) -> WrkResult:
    cmd = [
        args.wrk,
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(lua),
        url,
        "--",
        uuid.uuid4().hex[:12],
        str(args.users),
        key,
        body_template(),
    ]
    meter = CpuMeter(pids)
    meter.start()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    output = proc.stdout.read().decode()
    _, _, usage = os.wait4(proc.pid, 0)
    proc.returncode = 0
    meter.stop()
    match = re.search(r"RESULT (.*)", output)
    if not match:
        raise RuntimeError(f"wrk printed no result:\n{output}")
    fields = {k: int(v) for k, v in (kv.split("=") for kv in match.group(1).split())}
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    wrk_cpu = (usage.ru_utime + usage.ru_stime) / meter.wall
    cpu = meter.describe() + f", wrk {wrk_cpu * 100:.0f} %"
    return WrkResult(
        rate=fields["requests"] / (fields["duration_us"] / 1e6),
        requests=fields["requests"],
        errors=fields["connect"] + fields["read"] + fields["write"] + fields["timeout"],
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        p50_ms=fields["p50"] / 1000,
        p99_ms=fields["p99"] / 1000,
        max_ms=fields["max"] / 1000,
        server_cpu=meter.used["server"] / meter.wall,
        wrk_cpu=wrk_cpu,
        cpu=cpu,
    )


def line(name: str, r: WrkResult) -> str:
    bad = f", {r.non_2xx} non-2xx" if r.non_2xx else ""
    bad += f", {r.errors} socket errors" if r.errors else ""
    return (
        f"{name:8s} {r.rate:8,.0f} req/s  p50 {r.p50_ms:6.1f} ms  p99 {r.p99_ms:6.1f} ms  "
        f"max {r.max_ms:6.1f} ms{bad}\n           {r.cpu}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--rounds", type=int, default=3, help="bare/Tidings pairs (default 3)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up each")
    parser.add_argument("--connections", type=int, default=64, help="requests in flight")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--worker", choices=["on", "off"], default="on")
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
    parser.add_argument("--wrk", default=shutil.which("wrk") or "wrk")
    parser.add_argument("--profile", type=Path, metavar="FILE", help="py-spy raw output")
    parser.add_argument("--profile-rate", type=int, default=100)
    args = parser.parse_args()
    if args.code:
        use_code(args.code)
    if not shutil.which(args.wrk):
        sys.exit("wrk not found: apt-get install -y wrk")

    print(
        f"single-event ingest on {args.db} (worker {args.worker}) vs bare FastAPI: wrk "
        f"-t{args.threads} -c{args.connections}, {args.duration:.0f} s per run, "
        f"{args.rounds} rounds"
    )
    print(f"machine: {machine_line()}")
    print(code_line() + (f"; patched: {', '.join(args.patch)}" if args.patch else ""))
    workdir = Path(tempfile.mkdtemp(prefix="tidings-bench-wrk-"))
    lua = workdir / "event.lua"
    lua.write_text(LUA)
    bare_port = free_port()
    bare = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "bare_app.py"), "--port", str(bare_port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=open(workdir / "bare.log", "wb"),  # noqa: SIM115
    )
    try:
        wait_http(f"http://127.0.0.1:{bare_port}/healthz", 30, bare, workdir / "bare.log")
        with Deployment(args.db, worker=args.worker == "on", patches=args.patch) as d:
            d.start()
            assert d.proc is not None
            targets = {
                "bare": (f"http://127.0.0.1:{bare_port}", bare.pid),
                "tidings": (d.base_url, d.proc.pid),
            }
            for name, (url, pid) in targets.items():
                run_wrk(url, args.warmup, args, lua, d.key, {"server": pid})
                print(f"warmed up {name}", flush=True)
            results: dict[str, list[WrkResult]] = {"bare": [], "tidings": []}
            ratios: list[float] = []
            for rnd in range(1, args.rounds + 1):
                order = ["bare", "tidings"] if rnd % 2 else ["tidings", "bare"]
                got: dict[str, WrkResult] = {}
                for name in order:
                    url, pid = targets[name]
                    pids = {"server": pid}
                    time.sleep(1.0)  # let the previous run's connections close
                    got[name] = run_wrk(url, args.duration, args, lua, d.key, pids)
                    results[name].append(got[name])
                ratio = got["tidings"].rate / got["bare"].rate
                ratios.append(ratio)
                print(f"round {rnd}: ratio tidings/bare {ratio:.2f}")
                for name in ("bare", "tidings"):
                    print("  " + line(name, got[name]), flush=True)
            print()
            for name in ("bare", "tidings"):
                rs = results[name]
                print(f"median {name:8s} {summary([r.rate for r in rs])} req/s")
                print(
                    f"       {'':8s} p50 {statistics.median(r.p50_ms for r in rs):.1f} ms, "
                    f"p99 {statistics.median(r.p99_ms for r in rs):.1f} ms, server CPU "
                    f"{statistics.median(r.server_cpu for r in rs) * 100:.0f} %, wrk CPU "
                    f"{statistics.median(r.wrk_cpu for r in rs) * 100:.0f} %"
                )
            print(f"median ratio tidings/bare: {summary(ratios, '{:.2f}')}")
            if args.profile:
                with pyspy(d.proc.pid, args.profile, rate=args.profile_rate):
                    r = run_wrk(d.base_url, args.duration, args, lua, d.key, {"server": d.proc.pid})
                print("\nprofiled run (py-spy, not in the medians): " + line("tidings", r))
                print(
                    summarize(
                        args.profile.read_text(), rate=args.profile_rate, duration=args.duration
                    )
                )
    finally:
        stop_process(bare)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
