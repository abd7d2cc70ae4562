"""What the CLI prints is meant to be copied: ids whole whatever the terminal's width,
JSON for scripts, and help without markup that leaks through as text."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from tidings.cli import app

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TIDINGS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TIDINGS_CATALOG", str(ROOT / "catalog"))
    monkeypatch.delenv("TIDINGS_DATABASE_URL", raising=False)
    monkeypatch.delenv("TIDINGS_SECRET", raising=False)
    return tmp_path / "data"


def _create(runner: CliRunner, *args: str) -> str:
    """Create a key and return its id, read from the line the command prints about it."""
    result = runner.invoke(app, ["keys", "create", *args])
    assert result.exit_code == 0, result.output
    said = next(line for line in result.stderr.splitlines() if line.startswith("created key"))
    return said.split()[2]


def test_keys_list_shows_whole_ids_in_a_narrow_terminal_and_revoke_takes_them(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = CliRunner()
    web = _create(runner, "--name", "web team", "--types", "comment.*,mention.*")
    ops = _create(runner, "--name", "ops", "--scope", "admin")
    monkeypatch.setenv("COLUMNS", "40")
    listed = runner.invoke(app, ["keys", "list"], env={"COLUMNS": "40"})
    assert listed.exit_code == 0, listed.output
    rows = listed.stdout.splitlines()
    ids = [row.split()[0] for row in rows[1:]]
    assert sorted(ids) == sorted([web, ops]), listed.stdout
    web_row = rows[1 + ids.index(web)]
    assert "comment.*,mention.*" in web_row
    assert "active" in web_row

    revoked = runner.invoke(app, ["keys", "revoke", ids[ids.index(web)]])
    assert revoked.exit_code == 0, revoked.output
    again = runner.invoke(app, ["keys", "list"], env={"COLUMNS": "40"})
    assert "revoked" in next(row for row in again.stdout.splitlines() if row.startswith(web))


def test_keys_list_json_is_an_array_for_scripts(env: Path) -> None:
    runner = CliRunner()
    web = _create(runner, "--name", "web", "--types", "comment.*", "--scope", "users:read")
    ops = _create(runner, "--name", "ops", "--scope", "admin")
    assert runner.invoke(app, ["keys", "revoke", ops]).exit_code == 0

    result = runner.invoke(app, ["keys", "list", "--json"])
    assert result.exit_code == 0, result.output
    listed = {key["id"]: key for key in json.loads(result.stdout)}
    assert set(listed) == {web, ops}
    assert set(listed[web]) == {
        "id",
        "name",
        "prefix",
        "types",
        "scopes",
        "created_at",
        "revoked_at",
    }
    assert listed[web]["name"] == "web"
    assert listed[web]["types"] == ["comment.*"]
    assert listed[web]["scopes"] == ["users:read"]
    assert listed[web]["revoked_at"] is None
    assert listed[web]["created_at"].endswith("+00:00")
    assert len(listed[web]["prefix"]) == 12
    assert listed[ops]["scopes"] == ["admin"]
    assert listed[ops]["revoked_at"] is not None


def _command_paths(command: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and group under ``command``, as the words that name it."""
    paths = [path]
    for name, sub in getattr(command, "commands", {}).items():
        paths += _command_paths(sub, (*path, name))
    return paths


@pytest.mark.parametrize("columns", ["40", "120"])
def test_every_help_page_is_plain_text(env: Path, columns: str) -> None:
    paths = _command_paths(typer.main.get_command(app))
    assert ("keys", "list") in paths
    for path in paths:
        result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": columns})
        assert result.exit_code == 0, (path, result.output)
        shown = result.stdout
        for leak in ("`", "[[", "<bool>", "<list", "[/", "\\b"):
            assert leak not in shown, (path, leak, shown)
        # Every option that takes a value names it, in capitals, instead of its type.
        assert "<str>" not in shown.split("Options:")[-1], (path, shown)
        assert "<int>" not in shown.split("Options:")[-1], (path, shown)
