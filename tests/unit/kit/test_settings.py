from __future__ import annotations

from pathlib import Path

import pytest

from tidings.kit.settings import Settings, normalise_database_url


def test_defaults_are_the_embedded_database_in_the_data_folder(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert settings.port == 8000
    assert settings.is_embedded
    assert settings.resolved_database_url.endswith(str(tmp_path / "tidings.db"))


def test_environment_variables_configure_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDINGS_PORT", "9123")
    monkeypatch.setenv("TIDINGS_DATABASE_URL", "postgresql://u@h/db")
    monkeypatch.setenv("TIDINGS_CATALOG", "/somewhere")
    settings = Settings()
    assert settings.port == 9123
    assert settings.resolved_database_url == "postgresql+asyncpg://u@h/db"
    assert not settings.is_embedded
    assert settings.catalog == Path("/somewhere")


def test_the_secret_is_generated_once_and_shared(tmp_path: Path) -> None:
    first = Settings(data_dir=tmp_path).signing_secret
    second = Settings(data_dir=tmp_path).signing_secret
    assert first == second
    assert len(first) >= 32
    assert (tmp_path / "secret.key").stat().st_mode & 0o077 == 0
    assert Settings(data_dir=tmp_path, secret="explicit").signing_secret == "explicit"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://a/b", "postgresql+asyncpg://a/b"),
        ("sqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        ("postgresql+asyncpg://a/b", "postgresql+asyncpg://a/b"),
    ],
)
def test_driver_is_chosen_for_plain_urls(given: str, expected: str) -> None:
    assert normalise_database_url(given) == expected
