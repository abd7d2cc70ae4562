"""A channel added without touching Tidings: the "log" example of docs/channels.md,
taken from the page itself, is made an installed plugin in a folder of its own (a
package and its ``dist-info`` with the ``tidings.channels`` entry point, on the
server's ``PYTHONPATH``), a copy of the catalog gains a ``log:`` section, and a
notification is followed from ``POST /v1/events`` to the plugin's log line."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from pathlib import Path

import httpx
import yaml

from tests.conftest import CANONICAL_EVENT, CATALOG, ROOT
from tests.e2e.procs import Processes, create_key, free_port, run_cli, tidings_env

PAGE = ROOT / "docs" / "channels.md"


def log_channel_source() -> str:
    """The Python block under "The smallest channel: log" in docs/channels.md."""
    text = PAGE.read_text()
    section = text.split("### The smallest channel: log", 1)[1]
    found = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert found is not None, "docs/channels.md lost its log channel example"
    return found.group(1)


def install_plugin(folder: Path) -> None:
    """What ``pip install`` of a one-module package leaves: the module and its
    metadata, whose entry point registers the channel."""
    (folder / "tidings_log").mkdir(parents=True)
    (folder / "tidings_log" / "__init__.py").write_text(log_channel_source())
    info = folder / "tidings_log-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tidings-log\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[tidings.channels]\nlog = tidings_log:LogChannel\n")


def catalog_with_log(folder: Path) -> Path:
    """The shipped catalog, with comment.created also on the log channel."""
    shutil.copytree(CATALOG, folder)
    path = folder / "comment.created.yaml"
    ntype = yaml.safe_load(path.read_text())
    ntype["channels"]["log"] = {"text": "{{ actor.name }} commented on {{ data.board.name }}"}
    path.write_text(yaml.safe_dump(ntype, sort_keys=False))
    return folder


async def test_the_documented_log_channel_runs_as_a_plugin(
    processes: Processes, tmp_path: Path
) -> None:
    plugin = tmp_path / "site"
    install_plugin(plugin)
    env = tidings_env(
        tmp_path / "data", port=free_port(), catalog=str(catalog_with_log(tmp_path / "catalog"))
    )
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(plugin), env.get("PYTHONPATH")]))
    server = await processes.serve("serve", env)
    producer = {"Authorization": f"Bearer {await create_key(env)}"}

    async with httpx.AsyncClient(base_url=server.base_url, timeout=10.0) as client:
        published = await client.post("/v1/events", json=CANONICAL_EVENT, headers=producer)
        assert published.status_code == 202, published.text
        event_id = published.json()["event_id"]

        logged: list[dict[str, str]] = []
        for _ in range(300):
            answer = await client.get(f"/v1/events/{event_id}", headers=producer)
            assert answer.status_code == 200, answer.text
            logged = [d for d in answer.json()["deliveries"] if d["channel"] == "log"]
            if logged and logged[0]["state"] != "scheduled":
                break
            await asyncio.sleep(0.05)

    assert [(d["user_id"], d["state"]) for d in logged] == [("u-bob", "delivered")]
    assert "log channel: u-bob gets 'Ann commented on Roadmap'" in server.process.output()


def test_a_plugin_that_does_not_load_stops_every_command_with_one_line(tmp_path: Path) -> None:
    site = tmp_path / "site"
    info = site / "broken-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[tidings.channels]\nbroken = no_such_module:Thing\n")
    env = tidings_env(tmp_path / "data", port=free_port())
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")]))
    for args in (["serve"], ["catalog", "check"]):
        done = run_cli(args, env, check=False)
        assert done.returncode == 1, (args, done.stdout, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, (args, done.stderr)
        assert "channel plugin 'no_such_module:Thing' does not load" in lines[0]
        assert "Traceback" not in done.stderr
