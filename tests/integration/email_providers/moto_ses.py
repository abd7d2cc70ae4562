"""Amazon SES as moto serves it: a real HTTP server in a thread, and its inspection API."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tidings.email.providers.ses import SesSettings

REGION = "eu-west-1"
KEYS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


@contextmanager
def moto_server() -> Iterator[str]:
    """moto in server mode on a free loopback port; yields its URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        # stop() shuts the server down but leaves its socket open (a ResourceWarning).
        assert server._server is not None
        server._server.server_close()


def moto_api(url: str, path: str, method: str = "GET") -> Any:
    data = b"" if method == "POST" else None
    request = urllib.request.Request(url + path, method=method, data=data)
    with urllib.request.urlopen(request, timeout=10) as response:
        body = response.read()
    return json.loads(body) if body else None


def reset_and_verify(url: str, *identities: str) -> None:
    """Forget everything moto holds, then verify these identities, as SES requires."""
    import boto3

    moto_api(url, "/moto-api/reset", method="POST")
    client = boto3.client("sesv2", region_name=REGION, endpoint_url=url, **KEYS)
    try:
        for identity in identities:
            client.create_email_identity(EmailIdentity=identity)
    finally:
        client.close()


def sent_by_moto(url: str) -> list[dict[str, Any]]:
    """The raw messages moto's SES recorded (id, source, destinations, raw_data)."""
    messages: list[dict[str, Any]] = moto_api(url, "/moto-api/data.json")["ses"]["RawMessage"]
    return messages


def ses_settings(url: str, **overrides: Any) -> SesSettings:
    values: dict[str, Any] = {
        "region": REGION,
        "access_key_id": "testing",
        "secret_access_key": "testing",
        "endpoint_url": url,
        "timeout": 5.0,
        "max_attempts": 1,
    }
    values.update(overrides)
    return SesSettings(**values)
