"""``TIDINGS_SERVE_WORKERS``: how many worker processes ``tidings serve`` starts."""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError

from tidings.kit import settings as settings_module
from tidings.kit.settings import Settings

POSTGRES = "postgresql://tidings@127.0.0.1/tidings"


@pytest.mark.parametrize(
    ("value", "database_url", "expected"),
    [
        ("0", None, 0),
        ("3", POSTGRES, 3),
        (" 2 ", POSTGRES, 2),
        ("auto", POSTGRES, max(1, (os.cpu_count() or 1) - 1)),
        ("AUTO", POSTGRES, max(1, (os.cpu_count() or 1) - 1)),
        ("auto", None, 0),  # the embedded SQLite file has one writer
        ("64", POSTGRES, 64),
    ],
)
def test_worker_count(
    monkeypatch: pytest.MonkeyPatch, value: str, database_url: str | None, expected: int
) -> None:
    monkeypatch.setenv("TIDINGS_SERVE_WORKERS", value)
    if database_url:
        monkeypatch.setenv("TIDINGS_DATABASE_URL", database_url)
    else:
        monkeypatch.delenv("TIDINGS_DATABASE_URL", raising=False)
    assert Settings().serve_worker_count == expected


@pytest.mark.parametrize("value", ["-1", "65", "many", "", "1.5", "true"])
def test_a_worker_count_that_is_none_is_refused_in_one_line(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("TIDINGS_SERVE_WORKERS", value)
    with pytest.raises(ValidationError) as refused:
        Settings()
    assert settings_module.describe(refused.value) == (
        f"TIDINGS_SERVE_WORKERS: {value!r} is not a number of worker processes "
        "from 0 to 64, nor auto"
    )
