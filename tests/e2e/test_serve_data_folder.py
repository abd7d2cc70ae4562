"""End to end: ``tidings serve`` on a data folder it cannot write stops with one line
that names the folder and what to do, not a traceback.

The tests may run as root, whom file modes do not stop, so the folders here cannot be
written by anyone: a file stands where the folder should be, or where one of its parents
should be.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.procs import free_port, run_cli, tidings_env


@pytest.mark.parametrize("where", ["file_in_its_place", "file_as_a_parent"])
def test_serve_on_a_data_folder_it_cannot_write_says_so_in_one_line(
    tmp_path: Path, where: str
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file, not a folder\n")
    folder = blocker if where == "file_in_its_place" else blocker / "data"
    done = run_cli(["serve"], tidings_env(folder, port=free_port()), check=False, timeout=60)

    assert done.returncode == 1, done
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    [line] = lines
    assert line.startswith(f"error: cannot write to {folder} ("), line
    assert "TIDINGS_DATA_DIR" in line
    assert "TIDINGS_DATABASE_URL" in line
    assert "permissions" in line
