"""Summarise a py-spy raw profile (``py-spy record --format raw --threads``) as text.

Prints, per thread, how many samples it was on CPU, then where the time goes: by library
of the innermost frame ("self"), the top functions by self samples, and the Tidings
functions by inclusive samples (the time spent in them and everything they call).

    .venv/bin/python bench/profile_summary.py profile.txt [--rate 100 --duration 30]
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")

# (substring of the file path, label); the first match wins.
_LIBRARIES = [
    ("tidings/", "tidings (own code)"),
    ("sqlalchemy/", "SQLAlchemy"),
    ("asyncpg/", "asyncpg"),
    ("aiosqlite/", "aiosqlite"),
    ("sqlite3/", "sqlite3"),
    ("pydantic", "pydantic"),
    ("jsonschema/", "jsonschema"),
    ("referencing/", "jsonschema"),
    ("rpds", "jsonschema"),
    ("jinja2/", "jinja2"),
    ("markupsafe/", "jinja2"),
    ("uvicorn/", "uvicorn"),
    ("httptools", "uvicorn"),
    ("sse_starlette/", "sse-starlette"),
    ("fastapi/", "FastAPI"),
    ("starlette/", "Starlette"),
    ("anyio/", "anyio"),
    ("uvloop/", "asyncio/uvloop"),
    ("asyncio/", "asyncio/uvloop"),
    ("greenlet", "greenlet"),
    ("uuid", "uuid"),
    ("orjson", "json"),
    ("json/", "json"),
    ("hashlib", "hashlib"),
    ("threading.py", "threading"),
    ("queue.py", "threading"),
    ("typing.py", "typing"),
    ("copy.py", "stdlib copy"),
    ("datetime", "datetime"),
    ("enum.py", "enum"),
    ("dataclasses.py", "dataclasses"),
    ("logging/", "logging"),
]


def _parse_frame(raw: str) -> tuple[str, str]:
    match = _FRAME.match(raw)
    if not match:
        return raw, ""
    return match["func"], match["file"]


def library(file: str) -> str:
    for needle, label in _LIBRARIES:
        if needle in file:
            return label
    return "other: " + (file.rsplit("/", 1)[-1] or "?")


def _stage(frames: list[str]) -> str:
    """What a sample was doing, named by the outermost Tidings function on its stack:
    an endpoint, the worker, the group committer; HTTP work outside any endpoint (routing,
    body parsing and validation, response) is "HTTP framework"."""
    http = False
    for frame in frames:
        func, file = _parse_frame(frame)
        if "tidings/" not in file or "tidings/cli/" in file:
            continue
        if file.endswith("kit/http.py"):
            http = True
            continue
        if http and not file.endswith("endpoints.py"):
            continue
        return f"{'HTTP ' if http else ''}{func} ({file.split('tidings/', 1)[1]})"
    if http:
        return "HTTP framework outside endpoints (routing, body parse + validation, response)"
    files = [_parse_frame(frame)[1] for frame in frames]
    if any("sqlalchemy/" in file for file in files):
        # SQLAlchemy's asyncio layer runs statements in greenlets: py-spy sees their
        # stacks without the Tidings code that awaited them.
        return "SQLAlchemy executing statements (greenlet; caller not visible)"
    if any("aiosqlite/" in file for file in files):
        return "aiosqlite thread (SQLite C library running statements)"
    if not frames:
        return "no Python frame (C code: event loop, drivers)"
    return "other: " + library(files[-1])


def summarize(text: str, *, rate: int = 100, duration: float | None = None, top: int = 25) -> str:
    threads: Counter[str] = Counter()
    self_lib: Counter[str] = Counter()
    self_func: Counter[str] = Counter()
    incl_tidings: Counter[str] = Counter()
    incl_lib: Counter[str] = Counter()
    stage: Counter[str] = Counter()
    total = 0
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        stack_text, _, count_text = line.rpartition(" ")
        try:
            count = int(count_text)
        except ValueError:
            continue
        parts = stack_text.split(";")
        head, frames = parts[0], parts[1:]
        thread = head.split(": ", 1)[1] if ": " in head else head
        thread = re.sub(r"[-_ ]?\d+$", "", thread) or thread
        threads[thread] += count
        total += count
        if not frames:
            continue
        func, file = _parse_frame(frames[-1])
        self_lib[library(file)] += count
        self_func[f"{func} ({file})"] += count
        seen_t: set[str] = set()
        seen_l: set[str] = set()
        stage[f"{thread}: {_stage(frames)}"] += count
        for frame in frames:
            f_func, f_file = _parse_frame(frame)
            lib = library(f_file)
            if lib not in seen_l:
                seen_l.add(lib)
                incl_lib[lib] += count
            if "tidings/" in f_file and "tidings/cli/" not in f_file:
                key = f"{f_func} ({f_file.split('tidings/', 1)[1]})"
                if key not in seen_t:
                    seen_t.add(key)
                    incl_tidings[key] += count

    def pct(n: int) -> str:
        return f"{n / total * 100:5.1f} %" if total else "  n/a"

    out = [f"py-spy: {total:,} samples on CPU (idle samples excluded)"]
    for thread, count in threads.most_common():
        busy = ""
        if duration:
            busy = f", ~{count / (rate * duration) * 100:.0f} % of the run on CPU"
        out.append(f"  thread {thread}: {count:,} samples ({pct(count)}){busy}")
    out.append("\nby thread and stage (outermost Tidings frame of each sample):")
    out += [f"  {pct(n)}  {name}" for name, n in stage.most_common(top)]
    out.append("\nself time by library of the innermost frame:")
    out += [f"  {pct(n)}  {lib}" for lib, n in self_lib.most_common(top)]
    out.append("\ninclusive time by library (any frame on the stack):")
    out += [f"  {pct(n)}  {lib}" for lib, n in incl_lib.most_common(top)]
    out.append(f"\ntop {top} functions by self time:")
    out += [f"  {pct(n)}  {name}" for name, n in self_func.most_common(top)]
    out.append(f"\ntop {top} Tidings functions by inclusive time:")
    out += [f"  {pct(n)}  {name}" for name, n in incl_tidings.most_common(top)]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("profile", type=Path, help="py-spy raw output")
    parser.add_argument("--rate", type=int, default=100, help="the sampling rate used")
    parser.add_argument("--duration", type=float, help="seconds sampled (for the busy share)")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    print(summarize(args.profile.read_text(), rate=args.rate, duration=args.duration, top=args.top))


if __name__ == "__main__":
    main()
