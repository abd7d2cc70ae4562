"""The worker processes of ``tidings serve --workers N``: started beside the API process,
watched, asked for their readiness, and stopped with it.

Each worker is a ``tidings worker`` process of its own (the same command as a scale-out
worker, on the same settings), started in a session of its own so that a Ctrl-C in the
terminal reaches only ``serve``, which passes it on: one orderly stop, in one place.
Two descriptors tie a worker to the ``serve`` that started it:

* its health port, bound by ``serve`` on loopback and handed over already listening, so
  ``serve`` knows where to ask for its readiness and no two processes race for a port;
* a lifeline, the reading end of a pipe whose writing end only ``serve`` holds: when
  ``serve`` is gone, killed even, the pipe closes and the worker stops by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass

import httpx

log = logging.getLogger(__name__)

HEALTH_HOST = "127.0.0.1"
"""Where the workers' health ports listen: only ``serve`` asks them."""
POLL_SECONDS = 0.1
"""How often the workers are looked at for one that has exited."""
READINESS_SECONDS = 2.0
"""How long ``serve`` waits for a worker's ``/readyz`` before calling it not ready."""


@dataclass
class WorkerProcess:
    """One worker process, and the ends of its health port and lifeline kept here."""

    number: int
    popen: subprocess.Popen[bytes]
    health_port: int
    lifeline: int
    """The writing end of the lifeline: closing it tells the worker that serve is gone."""
    asked_to_stop: bool = False

    @property
    def name(self) -> str:
        return f"worker {self.number} (pid {self.popen.pid})"

    def exit_status(self) -> str:
        """How it ended: ``exit code N`` or ``signal NAME``."""
        code = self.popen.returncode
        if code is not None and code < 0:
            return f"signal {signal.Signals(-code).name}"
        return f"exit code {code}"


class Workers:
    """``count`` worker processes, started with ``start`` and stopped with ``stop``."""

    def __init__(self, count: int, *, stop_seconds: float) -> None:
        self.count = count
        self.stop_seconds = stop_seconds
        self.processes: list[WorkerProcess] = []

    def start(self) -> None:
        """Start the workers (they connect and become ready in the background).

        Raises:
            OSError: a process, pipe or port could not be had; those already started are
                stopped first.
        """
        try:
            for number in range(1, self.count + 1):
                self.processes.append(_spawn(number))
        except BaseException:
            for worker in self.processes:
                _send(worker, signal.SIGKILL)
            self._close_all()
            raise
        log.info(
            "started %d worker processes: pids %s",
            self.count,
            ",".join(str(worker.popen.pid) for worker in self.processes),
        )

    def send(self, sig: int) -> None:
        """Send ``sig`` to every worker still running (SIGINT and SIGTERM ask it to stop)."""
        for worker in self.processes:
            if sig in (signal.SIGINT, signal.SIGTERM):
                if worker.asked_to_stop:
                    continue  # once is enough: a second one could cut its stop short
                worker.asked_to_stop = True
            _send(worker, sig)

    async def exited(self) -> WorkerProcess:
        """Wait until a worker exits; returns it."""
        while True:
            for worker in self.processes:
                if worker.popen.poll() is not None:
                    return worker
            await asyncio.sleep(POLL_SECONDS)

    async def stop(self) -> bool:
        """Ask every worker still running and not asked yet to stop (SIGTERM) and wait for
        all of them; a worker still running after ``stop_seconds`` is killed. Returns
        whether every worker stopped as asked: with exit code 0, or by the SIGTERM itself
        when it came before the worker could handle it (while it was starting)."""
        self.send(signal.SIGTERM)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.stop_seconds
        while any(worker.popen.poll() is None for worker in self.processes):
            if loop.time() >= deadline:
                for worker in self.processes:
                    if worker.popen.poll() is None:
                        log.error(
                            "%s did not stop within %.0fs; killing it",
                            worker.name,
                            self.stop_seconds,
                        )
                        _send(worker, signal.SIGKILL)
                        worker.popen.wait()
                break
            await asyncio.sleep(POLL_SECONDS)
        self._close_all()
        clean = True
        for worker in self.processes:
            stopped = worker.asked_to_stop and worker.popen.returncode == -signal.SIGTERM
            if worker.popen.returncode != 0 and not stopped:
                clean = False
                log.error("%s ended with %s", worker.name, worker.exit_status())
        return clean

    async def readiness(self) -> str:
        """``ok`` when every worker answers its ``/readyz`` with 200, else why not."""
        problems = await asyncio.gather(*(_problem(worker) for worker in self.processes))
        found = [problem for problem in problems if problem is not None]
        return "; ".join(found) if found else "ok"

    def _close_all(self) -> None:
        for worker in self.processes:
            with contextlib.suppress(OSError):
                os.close(worker.lifeline)


def _spawn(number: int) -> WorkerProcess:
    """Start worker ``number`` with its health port and lifeline."""
    health = socket.create_server((HEALTH_HOST, 0), backlog=32)
    reading, writing = os.pipe()
    try:
        popen = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tidings",
                "worker",
                "--health-fd",
                str(health.fileno()),
                "--lifeline-fd",
                str(reading),
                "--watch-catalog",
            ],
            stdin=subprocess.DEVNULL,
            pass_fds=(health.fileno(), reading),
            start_new_session=True,
        )
    except BaseException:
        os.close(writing)
        raise
    finally:
        # The worker has its own copies now: these ends would only keep them open.
        port = int(health.getsockname()[1])
        health.close()
        os.close(reading)
    return WorkerProcess(number, popen, port, writing)


def _send(worker: WorkerProcess, sig: int) -> None:
    if worker.popen.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            worker.popen.send_signal(sig)


async def _problem(worker: WorkerProcess) -> str | None:
    """Why ``worker`` is not ready, or None when it is."""
    if worker.popen.poll() is not None:
        return f"{worker.name} ended with {worker.exit_status()}"
    url = f"http://{HEALTH_HOST}:{worker.health_port}/readyz"
    try:
        async with httpx.AsyncClient(timeout=READINESS_SECONDS) as client:
            response = await client.get(url)
    except httpx.HTTPError as exc:
        return f"{worker.name}: {type(exc).__name__} asking /readyz"
    if response.status_code == 200:
        return None
    try:
        checks = response.json().get("checks", {})
        failing = ", ".join(f"{k}: {v}" for k, v in checks.items() if v != "ok")
    except ValueError:
        failing = response.text[:200]
    return f"{worker.name}: not ready ({failing or response.status_code})"
