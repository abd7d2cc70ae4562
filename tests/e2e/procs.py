"""Helpers for end-to-end tests: run the real ``tidings`` command as subprocesses.

Every process is started with its output in a log file (never a pipe that could fill
up) and is registered with a ``Processes`` collection, whose ``close`` kills whatever
is still running; the ``processes`` fixture calls it at teardown.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx
import pytest

from tests.conftest import CATALOG, ROOT
from tidings.auth.keys import CAPABILITIES

TIDINGS = str(Path(sys.executable).with_name("tidings"))
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


def free_port() -> int:
    """A TCP port that was free a moment ago (bound to port 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def tidings_env(data_dir: Path, **settings: str | int | float | bool) -> dict[str, str]:
    """The environment of a ``tidings`` process: this one's, minus any ``TIDINGS_*``
    leaking in from the developer's shell, plus the given settings (``port=…`` becomes
    ``TIDINGS_PORT``).

    ``COLUMNS`` and ``LINES`` are dropped too, so the output is what an operator's log
    gets from a process without a terminal, whatever shell runs the tests.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("TIDINGS_") and k not in ("COLUMNS", "LINES")
    }
    env["TIDINGS_DATA_DIR"] = str(data_dir)
    env["TIDINGS_CATALOG"] = str(CATALOG)
    env["TIDINGS_HOST"] = "127.0.0.1"
    env["TIDINGS_WORKER_POLL_SECONDS"] = "0.05"
    for name, value in settings.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        env[f"TIDINGS_{name.upper()}"] = text
    return env


def run_cli(
    args: list[str], env: Mapping[str, str], *, check: bool = True, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """Run ``tidings ARGS`` to completion and return what it printed."""
    done = subprocess.run(
        [TIDINGS, *args],
        env=dict(env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and done.returncode != 0:
        pytest.fail(
            f"tidings {' '.join(args)} exited with {done.returncode}\n"
            f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
        )
    return done


def last_line(output: str) -> str:
    """The last non-empty line of a command's output (where keys and tokens are printed)."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    assert lines, "the command printed nothing"
    return lines[-1]


async def create_key(env: Mapping[str, str]) -> str:
    done = await asyncio.to_thread(
        run_cli,
        ["keys", "create", "--name", "e2e", "--types", "*", "--scope", ",".join(CAPABILITIES)],
        env,
    )
    return last_line(done.stdout)


async def user_token(env: Mapping[str, str], user_id: str) -> str:
    done = await asyncio.to_thread(run_cli, ["token", user_id], env)
    return last_line(done.stdout)


@dataclass
class Process:
    """One running ``tidings`` subprocess and the log file it writes to."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    log: IO[bytes]

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    async def wait(self, timeout: float = STOP_TIMEOUT) -> int:
        """Wait (bounded) for the process to exit; returns its exit code."""
        try:
            return await asyncio.to_thread(self.popen.wait, timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{self.name} did not exit within {timeout}s\n{self.output()}")

    async def kill(self) -> None:
        """SIGKILL: the process dies at once, wherever it was."""
        if self.running():
            self.popen.send_signal(signal.SIGKILL)
        await self.wait()

    async def terminate(self) -> int:
        """SIGTERM, then wait (bounded) for a clean exit; returns the exit code."""
        if self.running():
            self.popen.send_signal(signal.SIGTERM)
        return await self.wait()

    def close(self) -> None:
        """Last resort at teardown: kill if still running, reap, close the log."""
        try:
            if self.popen.poll() is None:
                self.popen.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(STOP_TIMEOUT)
        finally:
            self.log.close()


@dataclass
class Processes:
    """The subprocesses one test started; ``close`` reaps them all."""

    log_dir: Path
    started: list[Process] = field(default_factory=list)

    def start(self, name: str, args: list[str], env: Mapping[str, str]) -> Process:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{len(self.started):02d}-{name}.log"
        log = log_path.open("wb")
        try:
            popen = subprocess.Popen(
                [TIDINGS, *args],
                env=dict(env),
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        except BaseException:
            log.close()
            raise
        process = Process(name, popen, log_path, log)
        self.started.append(process)
        return process

    async def serve(self, name: str, env: Mapping[str, str]) -> Server:
        """Start ``tidings serve`` and wait (bounded) until ``/healthz`` answers 200."""
        process = self.start(name, ["serve"], env)
        server = Server(process, f"http://127.0.0.1:{env['TIDINGS_PORT']}")
        await server.wait_ready()
        return server

    def close(self) -> None:
        for process in self.started:
            process.close()


@dataclass
class Server:
    process: Process
    base_url: str

    async def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with httpx.AsyncClient(base_url=self.base_url, timeout=2.0) as client:
            while True:
                if not self.process.running():
                    pytest.fail(
                        f"{self.process.name} exited with {self.process.popen.returncode} "
                        f"before it was ready\n{self.process.output()}"
                    )
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get("/healthz")).status_code == 200:
                        break
                if loop.time() > deadline:
                    pytest.fail(
                        f"{self.process.name} was not ready within {timeout}s\n"
                        f"{self.process.output()}"
                    )
                await asyncio.sleep(0.05)
        assert "Listening on http://localhost:" in self.process.output()
