"""End to end: running processes take a changed catalog without a restart. ``tidings
serve`` watches its folder; ``tidings api`` and ``tidings worker`` reload on SIGHUP."""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

import httpx

from tests.conftest import CATALOG, eventually
from tests.e2e.procs import Processes, Server, create_key, free_port, tidings_env
from tests.integration.test_catalog_reload import ARCHIVED, NEW_TYPE


def catalog_copy(tmp_path: Path) -> Path:
    folder = tmp_path / "catalog"
    shutil.copytree(CATALOG, folder)
    return folder


async def published(server: Server, key: str) -> bool:
    """Whether publishing the new type answers 202 (422 while it is unknown)."""
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10.0) as client:
        answer = await client.post(
            "/v1/events", json=ARCHIVED, headers={"Authorization": f"Bearer {key}"}
        )
    assert answer.status_code in (202, 422), answer.text
    return answer.status_code == 202


async def test_serve_takes_a_type_added_to_its_folder(processes: Processes, tmp_path: Path) -> None:
    folder = catalog_copy(tmp_path)
    env = tidings_env(tmp_path / "data", port=free_port(), catalog=str(folder))
    server = await processes.serve("serve", env)
    key = await create_key(env)
    assert not await published(server, key)

    (folder / "board.archived.yaml").write_text(NEW_TYPE)
    await eventually(lambda: published(server, key), timeout=60.0, interval=0.2)
    assert "catalog reloaded" in server.process.output()


async def test_api_and_worker_reload_on_sighup(processes: Processes, tmp_path: Path) -> None:
    folder = catalog_copy(tmp_path)
    env = tidings_env(tmp_path / "data", port=free_port(), catalog=str(folder))
    key = await create_key(env)
    api = Server(processes.start("api", ["api"], env), f"http://127.0.0.1:{env['TIDINGS_PORT']}")
    await api.wait_ready()
    health = free_port()
    worker = processes.start("worker", ["worker", "--health-port", str(health)], env)

    async def worker_answers() -> bool:
        assert worker.running(), worker.output()
        try:
            async with httpx.AsyncClient(timeout=2.0) as client:
                answer = await client.get(f"http://127.0.0.1:{health}/healthz")
        except httpx.TransportError:
            return False
        return answer.status_code == 200

    await eventually(worker_answers, timeout=60.0, interval=0.1)

    (folder / "board.archived.yaml").write_text(NEW_TYPE)
    # Neither watches the folder: they reload when told.
    assert not await published(api, key)
    for process in (api.process, worker):
        process.popen.send_signal(signal.SIGHUP)

    await eventually(lambda: published(api, key), timeout=60.0, interval=0.2)

    async def worker_reloaded() -> bool:
        return "added: board.archived" in worker.output()

    await eventually(worker_reloaded, timeout=60.0)
    assert worker.running()
    assert api.process.running()
