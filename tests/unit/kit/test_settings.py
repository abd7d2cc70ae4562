from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from tidings.kit.settings import Settings, describe, normalise_database_url


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
    explicit = "explicit-" + "x" * 32
    assert Settings(data_dir=tmp_path, secret=explicit).signing_secret == explicit


@pytest.mark.parametrize("short", ["explicit", "x" * 31])
def test_a_short_secret_is_refused_in_one_line_that_says_how_to_make_one(short: str) -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(secret=short)
    line = describe(refused.value)
    assert line == (
        f"TIDINGS_SECRET is {len(short)} characters long; it must have at least 32: "
        'generate one with python -c "import secrets; print(secrets.token_urlsafe(32))"'
    )
    assert short not in str(refused.value)


def test_an_empty_secret_counts_as_not_set(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, secret="")
    assert len(settings.signing_secret) >= 32
    assert settings.signing_secret == (tmp_path / "secret.key").read_text().strip()


def test_a_short_secret_in_the_data_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "secret.key").write_text("short\n")
    with pytest.raises(ValueError, match=r"secret\.key is 5 characters long"):
        Settings(data_dir=tmp_path).signing_secret  # noqa: B018


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
