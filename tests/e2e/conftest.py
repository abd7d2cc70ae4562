"""Fixtures of the end-to-end tests: real ``tidings`` processes, always reaped."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.procs import Processes


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    """Starts ``tidings`` subprocesses; kills any still running at teardown."""
    started = Processes(tmp_path / "logs")
    try:
        yield started
    finally:
        started.close()
