"""Run the examples of one Markdown page against a real ``tidings serve``.

One ``Session`` per page: a fresh data folder, a catalog (the shipped one plus every
notification type the page declares), and a server started on a free port the first
time a block needs it. Blocks run in the page's order and share what a reader's
terminal would: shell variables (``KEY=$(...)``) reach later shell and Python blocks.

A failing block raises ``AssertionError`` saying which block and why.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import inspect
import io
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import yaml

from tests.conftest import CATALOG, ROOT, create_pg_database, drop_pg_database, pg_url
from tests.docs import expect
from tests.docs.blocks import HTTP, JSON, PYTHON, SHELL, YAML, Block
from tests.e2e.procs import TIDINGS, free_port, tidings_env
from tidings import catalog

START_TIMEOUT = 60.0
PORT_ATTEMPTS = 3
"""Starts of a page's server when the port picked for it was taken meanwhile."""
VENV_BIN = Path(sys.executable).parent
# Where the docs say a reader's server is, and what the examples there become.
DOC_SERVER = "localhost:8000"
DOC_POSTGRES = "postgresql://tidings@db.internal/tidings"
KEY_PLACEHOLDER = re.compile(r"tdg_(\.\.\.|…)")
_EXPECTATION = re.compile(r"^\s*# → ?(.*)$")
_CONTINUED = re.compile(r"^\s*#  +\S")  # an expectation's next line: "#   ..."
_HTTP_STATUS = re.compile(r"\n?@@@HTTP (\d{3})\n")
_SEGMENT = "@@@SEGMENT"
_ENV = "@@@ENV\n"

# The shell a block runs in: strict, every assignment exported (so the next block and
# the Python blocks see it), curl reporting its status after the body, `make run`
# meaning "the server is up", and long-running `tidings` commands started, checked
# and stopped by the wrapper put first on PATH.
_PRELUDE = r"""
set -eo pipefail
set -a
curl() {
  local arg
  for arg in "$@"; do
    if [ "$arg" = -N ]; then
      # A stream: what arrives in two seconds, then hang up.
      command curl --max-time 2 "$@" || [ $? -eq 28 ]
      return
    fi
  done
  command curl --max-time 30 -w '\n@@@HTTP %{http_code}\n' "$@"
}
make() {
  if [ "$*" = run ]; then
    command curl -sf "$DOCS_BASE_URL/readyz" >/dev/null
    echo "Tidings is running on $DOCS_BASE_URL"
  else
    echo "the docs tests do not run make $*" >&2
    return 1
  fi
}
"""

_WRAPPER = r"""#!/usr/bin/env bash
# `tidings` for the docs tests: a command that would run until stopped (serve, api,
# worker, scheduler) is started on free ports, must become ready, and is stopped.
real="$DOCS_TIDINGS"
case "$1" in
  serve|api|worker|scheduler) ;;
  *) exec "$real" "$@" ;;
esac
port=$("$DOCS_PYTHON" -c 'import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log=$(mktemp)
if [ "$1" = serve ] || [ "$1" = api ]; then
  TIDINGS_PORT=$port TIDINGS_DATA_DIR=$(mktemp -d) "$real" "$@" >"$log" 2>&1 &
else
  "$real" "$@" --health-port "$port" >"$log" 2>&1 &
fi
pid=$!
for _ in $(seq 600); do
  if command curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; then
    kill "$pid"; wait "$pid" || true
    echo "tidings $1: ready on port $port, then stopped"
    exit 0
  fi
  if ! kill -0 "$pid" 2>/dev/null; then
    cat "$log" >&2; echo "tidings $1 exited before it was ready" >&2; exit 1
  fi
  sleep 0.1
done
kill "$pid"; cat "$log" >&2; echo "tidings $1 was not ready in 60 s" >&2; exit 1
"""


class Session:
    """The reader's machine for one page: its server, catalog, shell and Python state."""

    def __init__(self, tmp: Path, blocks: list[Block]) -> None:
        self.tmp = tmp
        self.catalog = tmp / "catalog"
        shutil.copytree(CATALOG, self.catalog)
        for block in blocks:
            if block.language in YAML and not block.illustrative and _type_key(block):
                _install_type(block, self.catalog)
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.env = tidings_env(tmp / "data", port=self.port, catalog=str(self.catalog))
        self.server: subprocess.Popen[bytes] | None = None
        self.admin_key = ""
        self.shell_env: dict[str, str] = {}
        self.namespace: dict[str, Any] = {}
        self.databases: list[str] = []
        self.failed_to_start = ""

    def __enter__(self) -> Session:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self.server is not None and self.server.poll() is None:
            self.server.terminate()
            try:
                self.server.wait(15)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server.wait()
        for name in self.databases:
            asyncio.run(drop_pg_database(name))

    def run(self, block: Block) -> None:
        """Run one block the way its language says; raise AssertionError if it fails."""
        if block.language in SHELL:
            self._shell(block)
        elif block.language in PYTHON:
            self._python(block)
        elif block.language in YAML:
            _check_yaml(block, self.tmp)
        elif block.language in HTTP:
            self._http(block)
        elif block.language in JSON:
            self._json(block)
        else:
            raise AssertionError(f"{block}: no runner for {block.language!r}; mark it notest")

    # The server -------------------------------------------------------------------

    def start(self) -> None:
        """Start ``tidings serve`` (once), wait for /readyz, and make an operator key."""
        if self.failed_to_start:
            raise AssertionError(f"tidings serve did not start: {self.failed_to_start}")
        if self.server is not None:
            return
        self.failed_to_start = "see the first block that needed it"
        for attempt in range(1, PORT_ATTEMPTS + 1):
            if self._serve():
                break
            if "is already in use" not in self.server_log() or attempt == PORT_ATTEMPTS:
                raise AssertionError(f"tidings serve exited:\n{self.server_log()}")
            # Another test took the port picked for this page since: pick another.
            self._move_to(free_port())
        self.failed_to_start = ""

    def _serve(self) -> bool:
        """Start ``tidings serve`` and wait until it is ready: False if it exited first."""
        with (self.tmp / "serve.log").open("wb") as log:
            self.server = subprocess.Popen(
                [TIDINGS, "serve"],
                env=self.env,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT
        with httpx.Client(base_url=self.base_url, timeout=2.0) as client:
            while True:
                if self.server.poll() is not None:
                    self.server = None
                    return False
                with contextlib.suppress(httpx.TransportError):
                    if client.get("/readyz").status_code == 200:
                        return True
                if time.monotonic() > deadline:
                    raise AssertionError(f"tidings serve not ready:\n{self.server_log()}")
                time.sleep(0.05)

    def _move_to(self, port: int) -> None:
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.env["TIDINGS_PORT"] = str(port)

    def operator_key(self) -> str:
        """An ``admin`` key, for the blocks that show a placeholder (``tdg_...``)."""
        if not self.admin_key:
            done = subprocess.run(
                [TIDINGS, "keys", "create", "--name", "docs", "--scope", "admin"],
                env=self.env,
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=True,
            )
            self.admin_key = done.stdout.strip().splitlines()[-1]
        return self.admin_key

    def server_log(self) -> str:
        return (self.tmp / "serve.log").read_text(errors="replace")

    # Shell ------------------------------------------------------------------------

    def _shell(self, block: Block) -> None:
        self.start()
        if not self.shell_env:
            self.shell_env = self._first_shell_env()
        source = self._localised(block.source)
        source = re.sub(r"\.venv/bin/tidings\b(?!-)", "tidings", source)
        # The venv running the tests, wherever it is (a doc names the clone's own).
        source = source.replace(".venv/bin/", f"{Path(sys.executable).parent}/")
        if DOC_POSTGRES in source:
            source = source.replace(DOC_POSTGRES, self._postgres_url())
        script, expectations = _segmented(source)
        done = subprocess.run(
            ["bash", "-c", _PRELUDE + script + f"\nprintf '\\n{_ENV}'\nenv -0\n"],
            env=self.shell_env,
            cwd=ROOT,
            capture_output=True,
            timeout=300,
            check=False,
        )
        stdout = done.stdout.decode(errors="replace")
        shown, _, environment = stdout.partition(_ENV)
        stderr = done.stderr.decode(errors="replace")
        if done.returncode != 0:
            raise AssertionError(
                f"{block}: exited with {done.returncode}\nstdout:\n{shown}\nstderr:\n{stderr}"
            )
        self.shell_env = _environment(environment)
        outputs = shown.split(f"\n{_SEGMENT}\n")
        for index, output in enumerate(outputs):
            expected = expectations[index] if index < len(expectations) else None
            _check_output(block, output, expected, stderr)

    def _first_shell_env(self) -> dict[str, str]:
        wrapper_dir = self.tmp / "bin"
        wrapper_dir.mkdir()
        wrapper = wrapper_dir / "tidings"
        wrapper.write_text(_WRAPPER)
        wrapper.chmod(0o755)
        scratch = self.tmp / "scratch"
        scratch.mkdir()
        return {
            **self.env,
            "PATH": f"{wrapper_dir}{os.pathsep}{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
            "DOCS_TIDINGS": TIDINGS,
            "DOCS_PYTHON": sys.executable,
            "DOCS_BASE_URL": self.base_url,
            "TMPDIR": str(scratch),
        }

    def _postgres_url(self) -> str:
        name = asyncio.run(create_pg_database())
        self.databases.append(name)
        return pg_url(name).replace("+asyncpg", "")

    def _localised(self, source: str) -> str:
        return source.replace(DOC_SERVER, f"127.0.0.1:{self.port}")

    # Python -----------------------------------------------------------------------

    def _python(self, block: Block) -> None:
        if DOC_SERVER in block.source:
            self.start()
        if not self.namespace:
            self.namespace = {"__name__": "docs_example"}
        for name, value in self.shell_env.items():
            if name.isupper() and name not in self.env and not name.startswith("DOCS_"):
                self.namespace[name] = value
        source = self._localised(block.source)
        code = compile(
            source,
            f"{block.path}:{block.line}",
            "exec",
            flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
            dont_inherit=True,
        )
        printed = io.StringIO()
        try:
            with contextlib.redirect_stdout(printed):
                if code.co_flags & inspect.CO_COROUTINE:
                    asyncio.run(eval(code, self.namespace))
                else:
                    exec(code, self.namespace)
        except Exception as exc:
            raise AssertionError(
                f"{block}: raised {type(exc).__name__}: {exc}\nprinted:\n{printed.getvalue()}"
            ) from exc

    # HTTP and JSON ----------------------------------------------------------------

    def _http(self, block: Block) -> None:
        self.start()
        head, _, body = KEY_PLACEHOLDER.sub(self.operator_key(), block.source).partition("\n\n")
        request_line, *header_lines = head.splitlines()
        method, path = request_line.split()[:2]
        headers = dict(line.split(": ", 1) for line in header_lines)
        answer = self._send(method, path, headers, body.strip() or None)
        wanted = int(block.options.get("status", "0"))
        if (wanted and answer.status_code != wanted) or (not wanted and answer.status_code >= 400):
            raise AssertionError(
                f"{block}: {method} {path} answered {answer.status_code}: {answer.text}"
            )

    def _json(self, block: Block) -> None:
        """A JSON body the doc says to send (``request=``) or a response it shows
        (``response=``): sent, or compared in keys and shape with a real answer."""
        self.start()
        if "request" in block.options:
            method, path = block.options["request"].split(maxsplit=1)
            answer = self._send(method, path, self._auth(path), block.source)
            if answer.status_code >= 400:
                raise AssertionError(
                    f"{block}: {method} {path} answered {answer.status_code}: {answer.text}"
                )
            return
        if "response" not in block.options:
            raise AssertionError(f"{block}: say request=, response=, or mark it notest")
        method, path = block.options["response"].split(maxsplit=1)
        answer = self._send(method, path, self._auth(path), None)
        expected = expect.loose_json(block.source)
        found = expect.mismatches(expected, answer.json(), values="values" in block.tags)
        if found:
            raise AssertionError(f"{block}: differs from {method} {path}:\n" + "\n".join(found))

    def _auth(self, path: str) -> dict[str, str]:
        """An operator's key: it may read and write every producer endpoint."""
        return {"Authorization": f"Bearer {self.operator_key()}"}

    def _send(
        self, method: str, path: str, headers: dict[str, str], body: str | None
    ) -> httpx.Response:
        with httpx.Client(base_url=self.base_url, timeout=30.0) as client:
            return client.request(
                method,
                path,
                headers={"Content-Type": "application/json", **headers},
                content=body.encode() if body is not None else None,
            )


# Shell output -------------------------------------------------------------------------


def _segmented(source: str) -> tuple[str, list[str]]:
    """The script with a marker after each ``# → expected output`` comment, and those
    expectations in order: each applies to what the commands before it printed."""
    lines: list[str] = []
    expectations: list[str] = []
    shown: list[str] | None = None  # the lines of the expectation being read
    for line in [*source.splitlines(), ""]:
        if shown is not None and _CONTINUED.match(line):
            shown.append(line.lstrip("#").strip())
            lines.append(line)
            continue
        if shown is not None:
            expectations.append(" ".join(shown))
            lines.append(f"printf '\\n{_SEGMENT}\\n'")
            shown = None
        lines.append(line)
        if match := _EXPECTATION.match(line):
            shown = [match.group(1).strip()]
    return "\n".join(lines), expectations


def _check_output(block: Block, output: str, expected: str | None, stderr: str) -> None:
    statuses = [int(s) for s in _HTTP_STATUS.findall(output)]
    body = _HTTP_STATUS.sub("\n", output).strip()
    status_shown = None
    if expected and (match := re.match(r"^(\d{3})\b\s*(.*)$", expected)):
        status_shown, expected = int(match.group(1)), match.group(2)
    if status_shown is not None:
        if not statuses or statuses[-1] != status_shown:
            raise AssertionError(
                f"{block}: the doc shows {status_shown}, curl got {statuses}: {body}"
            )
    elif any(status >= 400 for status in statuses):
        raise AssertionError(f"{block}: curl got {statuses}: {body}\n{stderr}")
    if not expected:
        return
    if expected[0] in "{[":
        last = body.splitlines()[-1] if body else ""
        try:
            actual = expect.loose_json(last)
        except ValueError as exc:
            raise AssertionError(f"{block}: expected JSON like {expected}, got {body!r}") from exc
        found = expect.mismatches(expect.loose_json(expected), actual, values=True)
        if found:
            raise AssertionError(f"{block}: output differs from the doc:\n" + "\n".join(found))
    elif not body.startswith(expected):
        raise AssertionError(f"{block}: the doc shows {expected!r}, the command printed {body!r}")


def _environment(dump: str) -> dict[str, str]:
    pairs = (entry.partition("=") for entry in dump.split("\0") if "=" in entry)
    skip = {"_", "SHLVL", "PWD", "OLDPWD"}
    return {name: value for name, _, value in pairs if name not in skip}


# YAML -------------------------------------------------------------------------------


def _type_key(block: Block) -> str | None:
    data = yaml.safe_load(block.source)
    return data.get("key") if isinstance(data, dict) and "under" not in block.options else None


def _install_type(block: Block, folder: Path) -> Path:
    """Write the type a block declares into ``folder``, replacing a shipped one of that key."""
    key = _type_key(block)
    for existing in folder.rglob("*.y*ml"):
        data = yaml.safe_load(existing.read_text(encoding="utf-8"))
        if isinstance(data, dict) and data.get("key") == key:
            existing.unlink()
    target = folder / f"{key}.yaml"
    target.write_text(block.source, encoding="utf-8")
    return target


def _check_yaml(block: Block, tmp: Path) -> None:
    """A notification type, a categories file, or a fragment of a type (merged into
    the shipped ``comment.created`` at ``under=``): what ``tidings catalog check``
    says of a catalog holding it."""
    folder = tmp / f"check-{block.line}" / "catalog"
    folder.mkdir(parents=True)
    data = yaml.safe_load(block.source)
    if _type_key(block):
        _install_type(block, folder)
    elif isinstance(data, dict) and set(data) == {"categories"}:
        # With the shipped types of those categories: a catalog needs a type.
        (folder / "categories.yaml").write_text(block.source, encoding="utf-8")
        for shipped in CATALOG.glob("*.yaml"):
            declared = yaml.safe_load(shipped.read_text(encoding="utf-8"))
            if isinstance(declared, dict) and declared.get("category") in data["categories"]:
                shutil.copy(shipped, folder / shipped.name)
    else:
        base = yaml.safe_load((CATALOG / "comment.created.yaml").read_text(encoding="utf-8"))
        target = base
        for part in filter(None, block.options.get("under", "").split(".")):
            target = target.setdefault(part, {})
        for name, value in data.items():
            if isinstance(value, dict) and isinstance(target.get(name), dict):
                target[name] = {**target[name], **value}
            else:
                target[name] = value
        merged = yaml.safe_dump(base, sort_keys=False, allow_unicode=True)
        (folder / "comment.created.yaml").write_text(merged, encoding="utf-8")
    problems = catalog.check(folder)
    if problems:
        shown = textwrap.indent("\n".join(map(str, problems)), "  ")
        raise AssertionError(f"{block}: tidings catalog check says:\n{shown}")
