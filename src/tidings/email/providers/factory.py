"""Build the configured provider, by name, from settings."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from tidings.email.providers.base import EmailProvider
from tidings.kit.clock import Clock
from tidings.kit.db import Database

ProviderName = Literal["catcher", "smtp", "ses"]


class ProviderConfig(BaseModel):
    """Which provider sends email, and its settings.

    Each field is meant to live on the process settings under the same name, read from
    ``TIDINGS_`` + the name in capitals (``smtp_host`` from ``TIDINGS_SMTP_HOST``), so
    ``build_provider`` can be given the settings object itself. Fields it lacks take
    the defaults below.
    """

    model_config = ConfigDict(frozen=True, from_attributes=True, extra="ignore")

    # TIDINGS_EMAIL_PROVIDER: who sends. The secondary, if named, takes over after
    # `threshold` consecutive transient failures, and the primary is tried again after
    # `reset_seconds`.
    email_provider: ProviderName = "catcher"
    email_failover_provider: ProviderName | None = None
    email_failover_threshold: int = Field(default=3, ge=1)
    email_failover_reset_seconds: float = Field(default=30.0, ge=0)

    # TIDINGS_SMTP_*: the port defaults by security (none 25, starttls 587, tls 465);
    # AUTH happens when a username is set; cert_bundle is a CA file for a private CA;
    # max_per_second caps the sending rate (unset: no cap).
    smtp_host: str = "localhost"
    smtp_port: int | None = Field(default=None, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_security: Literal["none", "starttls", "tls"] = "starttls"
    smtp_timeout_seconds: float = Field(default=30.0, gt=0)
    smtp_pool_size: int = Field(default=4, ge=1, le=100)
    smtp_max_per_second: float | None = Field(default=None, gt=0)
    smtp_validate_certs: bool = True
    smtp_cert_bundle: str | None = None
    smtp_local_hostname: str | None = None

    # TIDINGS_SES_*: without keys, the default AWS credential chain is used;
    # endpoint_url points at something other than AWS (moto, in the tests).
    ses_region: str = "us-east-1"
    ses_access_key_id: str | None = None
    ses_secret_access_key: SecretStr | None = None
    ses_endpoint_url: str | None = None
    ses_configuration_set: str | None = None
    ses_max_per_second: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _consistent(self) -> ProviderConfig:
        if self.email_failover_provider == self.email_provider:
            raise ValueError("email_failover_provider must differ from email_provider")
        if (self.ses_access_key_id is None) != (self.ses_secret_access_key is None):
            raise ValueError("give both ses_access_key_id and ses_secret_access_key, or neither")
        return self


def build_provider(settings: object, *, db: Database, clock: Clock) -> EmailProvider:
    """The provider ``settings`` name, behind a circuit breaker when a failover is named.

    ``settings`` is a ``ProviderConfig`` or any object with its fields as attributes.

    Raises:
        pydantic.ValidationError: a setting is invalid.
        ImportError: SES is chosen but the ``ses`` extra is not installed.
    """
    config = (
        settings
        if isinstance(settings, ProviderConfig)
        else ProviderConfig.model_validate(settings, from_attributes=True)
    )
    primary = _build_one(config.email_provider, config, db=db, clock=clock)
    if config.email_failover_provider is None:
        return primary
    from tidings.email.providers import failover

    return failover.FailoverProvider(
        primary,
        _build_one(config.email_failover_provider, config, db=db, clock=clock),
        failure_threshold=config.email_failover_threshold,
        reset_after=config.email_failover_reset_seconds,
        clock=clock,
    )


def _build_one(
    name: ProviderName, config: ProviderConfig, *, db: Database, clock: Clock
) -> EmailProvider:
    # Imported here so choosing one provider never imports another's dependencies.
    if name == "catcher":
        from tidings.email.providers import catcher

        return catcher.MailCatcher(db, clock)
    if name == "smtp":
        from tidings.email.providers import smtp

        return smtp.SmtpProvider(
            smtp.SmtpSettings(
                host=config.smtp_host,
                port=config.smtp_port,
                username=config.smtp_username,
                password=_reveal(config.smtp_password),
                security=config.smtp_security,
                timeout=config.smtp_timeout_seconds,
                pool_size=config.smtp_pool_size,
                max_per_second=config.smtp_max_per_second,
                validate_certs=config.smtp_validate_certs,
                cert_bundle=config.smtp_cert_bundle,
                local_hostname=config.smtp_local_hostname,
            )
        )
    from tidings.email.providers import ses

    return ses.SesProvider(
        ses.SesSettings(
            region=config.ses_region,
            access_key_id=config.ses_access_key_id,
            secret_access_key=_reveal(config.ses_secret_access_key),
            endpoint_url=config.ses_endpoint_url,
            configuration_set=config.ses_configuration_set,
            max_per_second=config.ses_max_per_second,
        )
    )


def _reveal(secret: SecretStr | None) -> str | None:
    return secret.get_secret_value() if secret is not None else None
