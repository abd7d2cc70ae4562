"""Choosing and building the provider from settings."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import pydantic
import pytest

from tests.conftest import fresh_database
from tidings.email.providers import ProviderConfig, build_provider
from tidings.email.providers.catcher import MailCatcher
from tidings.email.providers.failover import FailoverProvider
from tidings.email.providers.ses import SesProvider
from tidings.email.providers.smtp import SmtpProvider
from tidings.kit.clock import FrozenClock
from tidings.kit.db import Database


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    async with fresh_database("sqlite", tmp_path) as url:
        database = Database(url)
        yield database
        await database.dispose()


async def test_the_default_is_the_mail_catcher(db: Database, clock: FrozenClock) -> None:
    provider = build_provider(ProviderConfig(), db=db, clock=clock)
    assert isinstance(provider, MailCatcher)


async def test_smtp_settings_are_carried_over(db: Database, clock: FrozenClock) -> None:
    config = ProviderConfig(
        email_provider="smtp",
        smtp_host="relay.example.com",
        smtp_port=2525,
        smtp_username="tidings",
        smtp_password=pydantic.SecretStr("s3cret"),
        smtp_security="tls",
        smtp_timeout_seconds=12.5,
        smtp_pool_size=8,
        smtp_max_per_second=20,
        smtp_validate_certs=False,
        smtp_cert_bundle="/etc/ssl/relay-ca.pem",
        smtp_local_hostname="tidings.example.com",
    )

    provider = build_provider(config, db=db, clock=clock)

    assert isinstance(provider, SmtpProvider)
    s = provider.settings
    assert (s.host, s.port, s.username, s.password) == (
        "relay.example.com",
        2525,
        "tidings",
        "s3cret",
    )
    assert (s.security, s.timeout, s.pool_size, s.max_per_second) == ("tls", 12.5, 8, 20)
    assert (s.validate_certs, s.cert_bundle, s.local_hostname) == (
        False,
        "/etc/ssl/relay-ca.pem",
        "tidings.example.com",
    )
    assert provider.capabilities.max_per_second == 20
    await provider.close()


async def test_ses_settings_are_carried_over(db: Database, clock: FrozenClock) -> None:
    config = ProviderConfig(
        email_provider="ses",
        ses_region="eu-central-1",
        ses_access_key_id="AKIA",
        ses_secret_access_key=pydantic.SecretStr("secret"),
        ses_endpoint_url="http://127.0.0.1:1",
        ses_configuration_set="events",
        ses_max_per_second=14,
    )

    provider = build_provider(config, db=db, clock=clock)

    assert isinstance(provider, SesProvider)
    s = provider.settings
    assert (s.region, s.access_key_id, s.secret_access_key) == ("eu-central-1", "AKIA", "secret")
    assert (s.endpoint_url, s.configuration_set, s.max_per_second) == (
        "http://127.0.0.1:1",
        "events",
        14,
    )
    await provider.close()


async def test_a_failover_wraps_both(db: Database, clock: FrozenClock) -> None:
    config = ProviderConfig(
        email_provider="smtp",
        email_failover_provider="catcher",
        email_failover_threshold=5,
        email_failover_reset_seconds=60,
    )

    provider = build_provider(config, db=db, clock=clock)

    assert isinstance(provider, FailoverProvider)
    assert isinstance(provider.primary, SmtpProvider)
    assert isinstance(provider.secondary, MailCatcher)
    assert provider.failure_threshold == 5
    assert provider.reset_after.total_seconds() == 60
    await provider.close()


async def test_reads_any_object_with_the_fields(db: Database, clock: FrozenClock) -> None:
    """The process settings can be handed over as they are; missing fields default."""
    settings = SimpleNamespace(
        email_provider="smtp", smtp_host="mx.example.com", smtp_password="plain", unrelated=1
    )

    provider = build_provider(settings, db=db, clock=clock)

    assert isinstance(provider, SmtpProvider)
    assert provider.settings.host == "mx.example.com"
    assert provider.settings.password == "plain"
    assert provider.settings.pool_size == 4
    await provider.close()


def test_reads_the_suggested_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the process settings will do: TIDINGS_ + the field name in capitals."""
    from pydantic_settings import BaseSettings, SettingsConfigDict

    class Env(ProviderConfig, BaseSettings):
        model_config = SettingsConfigDict(env_prefix="TIDINGS_", extra="ignore")

    monkeypatch.setenv("TIDINGS_EMAIL_PROVIDER", "smtp")
    monkeypatch.setenv("TIDINGS_SMTP_HOST", "relay.internal")
    monkeypatch.setenv("TIDINGS_SMTP_SECURITY", "none")
    monkeypatch.setenv("TIDINGS_SMTP_MAX_PER_SECOND", "7.5")
    monkeypatch.setenv("TIDINGS_EMAIL_FAILOVER_PROVIDER", "ses")

    config = ProviderConfig.model_validate(Env(), from_attributes=True)

    assert config.email_provider == "smtp"
    assert config.smtp_host == "relay.internal"
    assert config.smtp_security == "none"
    assert config.smtp_max_per_second == 7.5
    assert config.email_failover_provider == "ses"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"email_provider": "pigeon"}, "email_provider"),
        ({"email_provider": "smtp", "email_failover_provider": "smtp"}, "must differ"),
        ({"smtp_security": "ssl"}, "smtp_security"),
        ({"smtp_pool_size": 0}, "smtp_pool_size"),
        ({"smtp_max_per_second": 0}, "smtp_max_per_second"),
        ({"ses_access_key_id": "AKIA"}, "ses_secret_access_key"),
    ],
)
def test_invalid_settings_are_refused(fields: dict[str, object], message: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=message):
        ProviderConfig.model_validate(fields)
