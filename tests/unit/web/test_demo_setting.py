"""When the demo page is on: only for the embedded default left as it comes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tidings.kit.settings import Settings


@pytest.mark.parametrize(
    ("overrides", "enabled"),
    [
        ({}, True),
        ({"host": "localhost"}, True),
        ({"secret": "s" * 40}, False),
        ({"database_url": "postgresql://u@h/db"}, False),
        ({"host": "0.0.0.0"}, False),
        ({"email_provider": "smtp"}, False),
        ({"demo": False}, False),
        ({"demo": True, "secret": "s" * 40, "database_url": "postgresql://u@h/db"}, True),
    ],
)
def test_demo_is_on_only_for_the_untouched_embedded_default(
    tmp_path: Path, overrides: dict[str, Any], enabled: bool
) -> None:
    assert Settings(data_dir=tmp_path, **overrides).demo_enabled is enabled


def test_environment_switches_the_demo_and_names_cors_origins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIDINGS_DEMO", "false")
    monkeypatch.setenv("TIDINGS_CORS_ORIGINS", '["https://app.example.com"]')
    settings = Settings(data_dir=tmp_path)
    assert settings.demo_enabled is False
    assert settings.cors_origins == ["https://app.example.com"]


def test_no_cross_origin_access_by_default(tmp_path: Path) -> None:
    assert Settings(data_dir=tmp_path).cors_origins == []
