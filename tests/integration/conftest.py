"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tests.integration.noise_rig import START, Rig, rig, write_catalog
from tidings.kit.clock import FrozenClock
from tidings.kit.settings import Settings


@pytest.fixture
async def noise(
    make_settings: Callable[..., Settings], database_url: str, tmp_path: Path
) -> AsyncIterator[Rig]:
    """A Tidings on the noise-control catalog (``noise_rig``), once per storage engine,
    its clock frozen at ``START`` and no worker running: a test drains the jobs."""
    settings = make_settings(
        database_url=database_url,
        catalog=write_catalog(tmp_path / "catalog"),
        worker_enabled=False,
    )
    async with rig(settings, FrozenClock(START)) as r:
        yield r
