"""Settings, read from ``TIDINGS_*`` environment variables."""

from __future__ import annotations

import contextlib
import hmac
import os
import secrets
import tempfile
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything Tidings can be configured with; one instance per process."""

    # hide_input_in_errors: a refused value (a too-short secret) is never printed back.
    model_config = SettingsConfigDict(
        env_prefix="TIDINGS_", extra="ignore", hide_input_in_errors=True
    )

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    data_dir: Path = Path(".tidings")
    database_url: str | None = None
    # PostgreSQL: bring the schema up to date when a process starts, instead of refusing
    # to start on an older one (the embedded SQLite file is always brought up to date).
    migrate_on_start: bool = False
    catalog: Path = Field(default_factory=lambda: default_catalog())
    secret: str | None = Field(default=None, repr=False)
    public_url: str | None = None
    # The demo page mints tokens for its example users: on by default only where nothing
    # is at stake (see ``demo_enabled``).
    demo: bool | None = None
    # The demo serves its page and example users' tokens to loopback clients only; true
    # serves them to anyone who can reach it. Its mailbox stays loopback-only regardless.
    demo_remote: bool = False
    # Origins whose pages may call the end-user API (the inbox widget), e.g.
    # ``["https://app.example.com"]``; empty: the same origin only.
    cors_origins: list[str] = Field(default_factory=list)

    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    max_batch_events: int = Field(default=1000, ge=1, le=10_000)
    user_token_ttl_seconds: int = Field(default=3600, ge=60)
    key_cache_seconds: float = Field(default=1.0, ge=0, le=10)
    """How long a process trusts a key it verified: the bound on revocation elsewhere."""
    # Requests a second each API key and each end user may send, and the burst above
    # that; 0 turns the limit off. Counted in each API process on its own.
    rate_limit_per_second: float = Field(default=1000.0, ge=0)
    rate_limit_burst: int = Field(default=2000, ge=1)
    # Where the buckets live: in each API process, or in Redis, shared by all of them.
    rate_limit_backend: Literal["local", "redis"] = "local"

    # Bounds on the connections of each HTTP process (``serve``, ``api``): a connection
    # that has not sent a whole request head within ``header_timeout_seconds`` is closed,
    # a request whose body has not all arrived after ``body_timeout_seconds`` of waiting
    # for it ends with 408, an idle keep-alive connection is closed after
    # ``keepalive_timeout_seconds``, and beyond ``max_connections`` open connections
    # requests are answered 503 (``/healthz`` and ``/readyz`` still answer).
    header_timeout_seconds: float = Field(default=10.0, gt=0)
    body_timeout_seconds: float = Field(default=30.0, gt=0)
    keepalive_timeout_seconds: int = Field(default=5, ge=1)
    max_connections: int = Field(default=4000, ge=1)
    # Live inbox streams: how many one user may hold open in a process (a new one closes
    # that user's oldest), and how many a process holds in all (beyond: 503).
    max_streams_per_user: int = Field(default=10, ge=1)
    max_streams: int = Field(default=2000, ge=1)

    worker_enabled: bool = True
    # Worker processes ``tidings serve`` starts beside its API process on PostgreSQL (0:
    # API and worker share one process, as on SQLite, whose file has one writer);
    # ``auto``: one for each core but one, at least one (``serve_worker_count``).
    serve_workers: int | Literal["auto"] = 0
    worker_batch_size: int = Field(default=500, ge=1, le=5000)
    worker_lease_seconds: float = Field(default=30.0, gt=0)
    worker_poll_seconds: float = Field(default=0.2, gt=0)
    job_max_attempts: int = Field(default=8, ge=1)
    job_backoff_base_seconds: float = Field(default=1.0, gt=0)
    job_backoff_max_seconds: float = Field(default=300.0, gt=0)
    topic_page_size: int = Field(default=1000, ge=1, le=10_000)
    # A topic event to at least this many subscribers is stored once, as a broadcast each
    # subscriber's inbox shows when read, when its type allows (docs/inbox.md); 0 fans
    # every topic event out on write.
    fanout_on_read_min: int = Field(default=10_000, ge=0)

    # Scale-out engines. The defaults keep everything in the one database and process.
    queue_backend: Literal["database", "jetstream"] = "database"
    counters_backend: Literal["database", "redis"] = "database"
    live_backend: Literal["local", "nats", "redis", "postgres"] = "local"
    # Take events in from NATS JetStream too (``<nats_prefix>.ingest.<key prefix>``).
    ingest_enabled: bool = False
    nats_url: str = "nats://127.0.0.1:4222"
    nats_prefix: str = Field(default="tidings", pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    nats_replicas: int = Field(default=1, ge=1, le=5)
    nats_partitions: int = Field(default=8, ge=1, le=256)
    nats_ack_wait_seconds: float = Field(default=30.0, gt=0)
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = Field(default="tidings", pattern=r"^[A-Za-z0-9_:.-]{1,64}$")
    health_port: int | None = Field(default=None, ge=0, le=65535)
    worker_stages: str = Field(
        default="plan,deliver", pattern=r"^(plan|deliver)(,(plan|deliver))*$"
    )
    worker_lanes: str = Field(default="0,1,2,3", pattern=r"^[0-3](,[0-3])*$")
    scheduler_poll_seconds: float = Field(default=1.0, gt=0)

    # Retention: how long what was sent is kept (0 keeps it forever), removed in the
    # background by every process that runs the worker, a small batch at a time.
    retention_events_days: int = Field(default=90, ge=0)
    retention_deliveries_days: int = Field(default=90, ge=0)
    retention_inbox_days: int = Field(default=180, ge=0)
    inbox_max_items_per_user: int = Field(default=1000, ge=0)
    retention_batch_size: int = Field(default=500, ge=1, le=10_000)
    retention_interval_seconds: float = Field(default=3600.0, gt=0)

    # Status webhooks: the delays between attempts at one message (its attempts are one
    # more than the delays), how many failed attempts in a row disable an endpoint,
    # whether endpoints may point at loopback or private addresses, and how often each
    # process reads the list of endpoints again.
    webhooks_retry_seconds: list[float] = Field(
        default_factory=lambda: [5.0, 30.0, 120.0, 600.0, 3600.0, 10800.0, 21600.0]
    )
    webhooks_disable_after: int = Field(default=20, ge=1)
    webhooks_allow_private: bool = False
    webhooks_max_per_key: int = Field(default=50, ge=1, le=10_000)
    """Endpoints one API key may register: each delivery change is a message per endpoint."""
    webhooks_timeout_seconds: float = Field(default=10.0, gt=0)
    webhooks_cache_seconds: float = Field(default=5.0, ge=0)

    log_level: str = "info"
    log_format: Literal["auto", "json", "console"] = "auto"
    """``auto``: JSON lines unless standard error is a terminal."""

    # Email: who it comes from, how it is signed, and which provider hands it over.
    email_provider: Literal["catcher", "smtp", "ses"] = "catcher"
    email_failover_provider: Literal["smtp", "ses"] | None = None
    email_failover_threshold: int = Field(default=3, ge=1)
    email_failover_reset_seconds: float = Field(default=30.0, ge=0)
    email_from: str = "notifications@tidings.localhost"
    email_from_name: str | None = "Tidings"
    email_domain: str | None = None
    unsubscribe_mailto: str | None = None
    dkim_selector: str = "tidings"
    dkim_private_key: SecretStr | None = None
    dkim_private_key_file: Path | None = None
    email_webhook_secret: SecretStr | None = None
    sns_certificates_dir: Path | None = None
    sns_topic_arns: list[str] = Field(default_factory=list)
    email_compose_processes: int | None = Field(default=None, ge=0, le=64)
    """Worker processes that build and DKIM-sign email, per worker (None: one per two
    cores, 1 to 4; 0: in the event loop)."""

    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_security: Literal["none", "starttls", "tls"] = "none"
    smtp_pool_size: int = Field(default=4, ge=1, le=64)
    smtp_max_per_second: float | None = Field(default=None, gt=0)
    smtp_timeout_seconds: float = Field(default=30.0, gt=0)
    smtp_validate_certs: bool = True
    smtp_cert_bundle: str | None = None
    smtp_local_hostname: str | None = None

    ses_region: str = "us-east-1"
    ses_endpoint_url: str | None = None
    ses_access_key_id: str | None = None
    ses_secret_access_key: SecretStr | None = None
    ses_configuration_set: str | None = None
    ses_max_per_second: float | None = Field(default=None, gt=0)

    # Plugin channels' settings, by channel and setting name, over their own
    # ``TIDINGS_<CHANNEL>_*`` variables (see ``channel_settings_of``).
    channel_settings: dict[str, dict[str, str]] = Field(default_factory=dict)

    def channel_settings_of(self, channel: str) -> dict[str, str]:
        """The settings of plugin channel ``channel``: its ``TIDINGS_<CHANNEL>_*`` variables
        by the rest of their name in lower case, under ``channel_settings[channel]``."""
        prefix = f"TIDINGS_{channel.upper()}_"
        found = {
            name[len(prefix) :].lower(): value
            for name, value in os.environ.items()
            if name.upper().startswith(prefix)
        }
        found.update(self.channel_settings.get(channel, {}))
        return found

    @property
    def resolved_database_url(self) -> str:
        """The database URL: explicit, or the embedded SQLite file in the data folder."""
        if self.database_url:
            return normalise_database_url(self.database_url)
        return f"sqlite+aiosqlite:///{(self.data_dir / 'tidings.db').resolve()}"

    @property
    def nats_servers(self) -> list[str]:
        """The NATS servers: ``TIDINGS_NATS_URL`` may list several, comma-separated."""
        return [url.strip() for url in self.nats_url.split(",") if url.strip()]

    @property
    def stages(self) -> list[str]:
        """The pipeline stages a worker of this process runs."""
        return sorted(set(self.worker_stages.split(",")))

    @property
    def lanes(self) -> list[int]:
        """The priority lanes a worker of this process serves."""
        return sorted({int(lane) for lane in self.worker_lanes.split(",")})

    @property
    def serve_worker_count(self) -> int:
        """The worker processes ``tidings serve`` starts: ``serve_workers``, with ``auto``
        worked out for this machine (none on the embedded SQLite default)."""
        if self.serve_workers != "auto":
            return self.serve_workers
        if self.is_embedded:
            return 0
        return max(1, (os.cpu_count() or 1) - 1)

    @property
    def is_embedded(self) -> bool:
        """True when running on the embedded SQLite default."""
        return self.resolved_database_url.startswith("sqlite")

    @field_validator("serve_workers", mode="before")
    @classmethod
    def _worker_count(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() == "auto":
            return "auto"
        try:
            count = int(str(value).strip()) if isinstance(value, str) else value
        except ValueError:
            count = None
        if not isinstance(count, int) or isinstance(count, bool) or not 0 <= count <= 64:
            raise ValueError(
                f"TIDINGS_SERVE_WORKERS: {value!r} is not a number of worker processes "
                "from 0 to 64, nor auto"
            )
        return count

    @field_validator("secret")
    @classmethod
    def _long_enough(cls, value: str | None) -> str | None:
        # Everything a deployment signs (user tokens, links, console sessions) is only as
        # strong as this; an empty value counts as not set, as before.
        if value and len(value) < SECRET_MIN_LENGTH:
            raise ValueError(secret_too_short("TIDINGS_SECRET", len(value)))
        return value

    @property
    def demo_enabled(self) -> bool:
        """Whether ``/demo`` is served. ``TIDINGS_DEMO`` wins; by default it is on only for
        the embedded default left as it comes: SQLite, no ``TIDINGS_SECRET``, the mail
        catcher, and listening on loopback."""
        if self.demo is not None:
            return self.demo
        return (
            self.is_embedded
            and self.secret is None
            and self.email_provider == "catcher"
            and self.host in ("127.0.0.1", "localhost", "::1")
        )

    @cached_property
    def signing_secret(self) -> str:
        """The secret user tokens and links are signed with.

        ``TIDINGS_SECRET`` wins; otherwise a secret is generated on first use and kept in
        the data folder, so the CLI beside a running server signs with the same one.
        """
        if self.secret:
            return self.secret
        path = self.data_dir / "secret.key"
        found = _secret_from_file(path)
        if len(found) < SECRET_MIN_LENGTH:
            raise ValueError(secret_too_short(str(path), len(found)))
        return found

    @property
    def sender_domain(self) -> str:
        """The domain messages are signed for and Message-IDs are minted in."""
        return self.email_domain or self.email_from.rpartition("@")[2]

    @cached_property
    def dkim_key_pem(self) -> bytes:
        """The DKIM private key: explicit, from a file, or generated into the data folder."""
        if self.dkim_private_key is not None:
            return self.dkim_private_key.get_secret_value().encode()
        if self.dkim_private_key_file is not None:
            return self.dkim_private_key_file.read_bytes()
        return _dkim_key_from_file(self.data_dir / "dkim.pem")

    @property
    def webhook_secret(self) -> str:
        """The secret generic email feedback webhooks are signed with."""
        if self.email_webhook_secret is not None:
            return self.email_webhook_secret.get_secret_value()
        return hmac.new(self.signing_secret.encode(), b"email-webhooks", "sha256").hexdigest()

    @property
    def base_url(self) -> str:
        """The URL people reach this deployment at."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "localhost" if self.host in ("127.0.0.1", "0.0.0.0") else self.host
        return f"http://{host}:{self.port}"


SECRET_MIN_LENGTH = 32
"""The fewest characters ``TIDINGS_SECRET`` may have."""

GENERATE_SECRET = 'python -c "import secrets; print(secrets.token_urlsafe(32))"'


def default_catalog() -> Path:
    """``./catalog`` where there is one (a clone, or a deployment's own folder); elsewhere
    the example catalog that an installed wheel carries, so that ``tidings serve`` starts
    from any folder after ``pip install``."""
    here = Path("catalog")
    shipped = Path(__file__).resolve().parent.parent / "examples" / "catalog"
    return shipped if not here.is_dir() and shipped.is_dir() else here


def secret_too_short(where: str, length: int) -> str:
    """The one line that says a secret is too short and how to make a good one."""
    return (
        f"{where} is {length} characters long; it must have at least {SECRET_MIN_LENGTH}: "
        f"generate one with {GENERATE_SECRET}"
    )


def describe(exc: ValidationError) -> str:
    """Settings that were refused, one line each, by their environment variable."""
    lines = []
    for error in exc.errors():
        name = "_".join(str(part) for part in error["loc"]).upper()
        message = str(error["msg"]).removeprefix("Value error, ")
        lines.append(message if message.startswith("TIDINGS_") else f"TIDINGS_{name}: {message}")
    return "\n".join(lines)


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


def _dkim_key_from_file(path: Path) -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    def generate() -> bytes:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    return _create_once(path, generate)


def _secret_from_file(path: Path) -> str:
    return _create_once(path, lambda: secrets.token_urlsafe(48).encode()).decode().strip()


def _create_once(path: Path, make: Callable[[], bytes]) -> bytes:
    """The file's content, made and written by whichever process gets there first.

    The content is written to a private temporary file and linked into place, so a
    process starting at the same moment never reads a half-written file.
    """
    if path.exists():
        return path.read_bytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(make())
        os.chmod(temporary, 0o600)
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    finally:
        os.unlink(temporary)
    return path.read_bytes()
