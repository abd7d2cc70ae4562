"""Settings, read from ``TIDINGS_*`` environment variables."""

from __future__ import annotations

import os
import secrets
from functools import cached_property
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything Tidings can be configured with; one instance per process."""

    model_config = SettingsConfigDict(env_prefix="TIDINGS_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    data_dir: Path = Path(".tidings")
    database_url: str | None = None
    catalog: Path = Path("catalog")
    secret: str | None = Field(default=None, repr=False)
    public_url: str | None = None

    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    max_batch_events: int = Field(default=1000, ge=1, le=10_000)
    user_token_ttl_seconds: int = Field(default=3600, ge=60)

    worker_enabled: bool = True
    worker_batch_size: int = Field(default=500, ge=1, le=5000)
    worker_lease_seconds: float = Field(default=30.0, gt=0)
    worker_poll_seconds: float = Field(default=0.2, gt=0)
    job_max_attempts: int = Field(default=8, ge=1)
    job_backoff_base_seconds: float = Field(default=1.0, gt=0)
    job_backoff_max_seconds: float = Field(default=300.0, gt=0)
    topic_page_size: int = Field(default=1000, ge=1, le=10_000)

    log_level: str = "info"

    @property
    def resolved_database_url(self) -> str:
        """The database URL: explicit, or the embedded SQLite file in the data folder."""
        if self.database_url:
            return normalise_database_url(self.database_url)
        return f"sqlite+aiosqlite:///{(self.data_dir / 'tidings.db').resolve()}"

    @property
    def is_embedded(self) -> bool:
        """True when running on the embedded SQLite default."""
        return self.resolved_database_url.startswith("sqlite")

    @cached_property
    def signing_secret(self) -> str:
        """The secret user tokens and links are signed with.

        ``TIDINGS_SECRET`` wins; otherwise a secret is generated on first use and kept in
        the data folder, so the CLI beside a running server signs with the same one.
        """
        if self.secret:
            return self.secret
        return _secret_from_file(self.data_dir / "secret.key")

    @property
    def base_url(self) -> str:
        """The URL people reach this deployment at."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "localhost" if self.host in ("127.0.0.1", "0.0.0.0") else self.host
        return f"http://{host}:{self.port}"


def normalise_database_url(url: str) -> str:
    """Pick the async driver for a plain ``postgresql://`` or ``sqlite://`` URL."""
    for plain, driver in (
        ("postgresql://", "postgresql+asyncpg://"),
        ("postgres://", "postgresql+asyncpg://"),
        ("sqlite://", "sqlite+aiosqlite://"),
    ):
        if url.startswith(plain):
            return driver + url[len(plain) :]
    return url


def _secret_from_file(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_urlsafe(48))
    return path.read_text().strip()
