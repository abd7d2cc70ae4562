"""The email commands: ``email dns`` and ``email webhook-secret``."""

from __future__ import annotations

import typer

from tidings.cli._setup import load_settings
from tidings.cli._terminal import out

app = typer.Typer(help="The email channel.", no_args_is_help=True)


@app.command("dns")
def email_dns() -> None:
    """Print the DNS TXT record that publishes this deployment's DKIM key."""
    from tidings.email import dkim

    settings = load_settings()
    name = f"{settings.dkim_selector}._domainkey.{settings.sender_domain}"
    out.print(f"{name}. IN TXT", highlight=False)
    print(dkim.dns_record(settings.dkim_key_pem))


@app.command("webhook-secret")
def email_webhook_secret() -> None:
    """Print the secret that signs generic email feedback webhooks, alone on the last line."""
    print(load_settings().webhook_secret)
