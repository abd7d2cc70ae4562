"""A webhook message as it goes on the wire: its JSON body and its Standard Webhooks
headers, signed with the endpoint's secret (and the previous one while it is rotated)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from typing import Any

import standardwebhooks


def body_of(payload: Mapping[str, Any]) -> str:
    """The JSON body of a message: ``type``, ``timestamp``, then ``data``."""
    ordered = {"type": payload["type"], "timestamp": payload["timestamp"], **payload}
    return json.dumps(ordered, separators=(",", ":"), ensure_ascii=False, default=str)


def signed_headers(
    secrets: Sequence[str], msg_id: str, at: dt.datetime, body: str
) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt at a message, with one signature per
    secret (space-separated, as the spec allows while a secret is being rotated)."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": " ".join(
            standardwebhooks.Webhook(secret).sign(msg_id, at, body) for secret in secrets
        ),
    }


def signing_secrets(endpoint: Mapping[str, Any], now: dt.datetime) -> list[str]:
    """The endpoint's secret, and the one before it while its grace period lasts."""
    found = [endpoint["secret"]]
    until = endpoint.get("previous_secret_until")
    if endpoint.get("previous_secret") and until is not None and now < until:
        found.append(endpoint["previous_secret"])
    return found
