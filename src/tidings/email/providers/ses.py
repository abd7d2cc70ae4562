"""Amazon SES (v2 API, ``SendEmail`` with raw content), through ``aiobotocore``.

An optional extra: ``pip install 'tidings[ses]'``. Nothing here imports it until a
provider is built.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
from dataclasses import dataclass, field
from typing import Any

from tidings.email import addresses
from tidings.email.message import OutgoingEmail
from tidings.email.providers._ratelimit import RateLimiter
from tidings.email.providers.base import (
    Accepted,
    Capabilities,
    PermanentSendError,
    SendError,
    TransientSendError,
)

NAME = "ses"
_STREAM_ABOVE = 512 * 1024
INSTALL_HINT = "Amazon SES needs the optional extra: pip install 'tidings[ses]'"

# What SES says when this message, its sender or the account may not send. Every
# other error (throttling, quotas, 5xx, credentials, a missing configuration set,
# the network) is retried: bounded retries end in the dead letters, which can be
# replayed once the cause is fixed, whereas a permanent failure is final.
PERMANENT_CODES = frozenset(
    {
        "MessageRejected",
        "MailFromDomainNotVerifiedException",
        "AccountSuspendedException",
        "SendingPausedException",
        "BadRequestException",
        "InvalidParameterValue",
    }
)


@dataclass(frozen=True)
class SesSettings:
    """How to reach SES. Without keys, the default AWS credential chain is used.

    ``endpoint_url`` points elsewhere than AWS (a test double); ``max_attempts`` is
    botocore's own quick retries within one send, before the delivery's backoff;
    ``max_per_second`` should match the account's sending rate.
    """

    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    endpoint_url: str | None = None
    configuration_set: str | None = None
    max_per_second: float | None = None
    timeout: float = 30.0
    max_attempts: int = 3
    max_message_bytes: int = 40 * 1024 * 1024

    def __post_init__(self) -> None:
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("give both access_key_id and secret_access_key, or neither")
        if self.max_per_second is not None and not self.max_per_second > 0:
            raise ValueError("max_per_second must be positive, or None for no cap")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")


class SesProvider:
    """Sends each message with SES ``SendEmail``; ``Accepted.provider_id`` is its MessageId.

    Raises:
        ImportError: at construction, when the ``ses`` extra is not installed.
    """

    def __init__(self, settings: SesSettings) -> None:
        self.settings = settings
        self._aws = _import_aws()
        self._limiter = (
            RateLimiter(settings.max_per_second) if settings.max_per_second is not None else None
        )
        self._capabilities = Capabilities(
            name=NAME,
            max_message_bytes=settings.max_message_bytes,
            max_per_second=settings.max_per_second,
        )
        self._client: Any = None
        self._stack = contextlib.AsyncExitStack()
        self._client_lock = asyncio.Lock()
        self._closed = False

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    async def send(self, email: OutgoingEmail) -> Accepted:
        """Hand one message to SES.

        Raises:
            TransientSendError: throttling, quotas, service or network trouble.
            PermanentSendError: SES rejected the message, its sender or the account.
        """
        if self._closed:
            raise TransientSendError("the SES provider is closed", provider=NAME)
        for address in (email.sender, email.recipient):
            if addresses.needs_smtputf8(address):
                raise PermanentSendError(
                    f"Amazon SES cannot send to or from {address!r}: it takes only ASCII "
                    "before the @ (no SMTPUTF8)",
                    provider=NAME,
                )
        if self._limiter is not None:
            await self._limiter.acquire()
        request: dict[str, Any] = {
            "FromEmailAddress": email.sender,
            "Destination": {"ToAddresses": [email.recipient]},
            "Content": {"Raw": {"Data": email.raw}},
        }
        if self.settings.configuration_set:
            request["ConfigurationSetName"] = self.settings.configuration_set
        try:
            client = await self._connected()
            response = await client.send_email(**request)
        except Exception as exc:
            raise classify(exc) from exc
        message_id = str(response["MessageId"])
        return Accepted(provider=NAME, provider_id=message_id, reply=f"200 MessageId {message_id}")

    async def close(self) -> None:
        """Close the HTTP client."""
        self._closed = True
        async with self._client_lock:
            self._client = None
            await self._stack.aclose()

    async def _connected(self) -> Any:
        async with self._client_lock:
            if self._client is None:
                s = self.settings
                config = self._aws.AioConfig(
                    connect_timeout=s.timeout,
                    read_timeout=s.timeout,
                    retries={"mode": "standard", "total_max_attempts": s.max_attempts},
                )
                creating = self._aws.get_session().create_client(
                    "sesv2",
                    region_name=s.region,
                    endpoint_url=s.endpoint_url,
                    aws_access_key_id=s.access_key_id,
                    aws_secret_access_key=s.secret_access_key,
                    config=config,
                )
                client = await self._stack.enter_async_context(creating)
                client.meta.events.register("before-send.sesv2.SendEmail", _stream_large_body)
                self._client = client
            return self._client


def _stream_large_body(request: Any, **_: Any) -> None:
    """Hand a large request body to aiohttp as a stream, which it sends in chunks.

    Given bytes over 1 MiB, aiohttp warns that writing them may block the event loop.
    A stream can also be rewound, so botocore's own retries still work.
    """
    if isinstance(request.body, bytes | bytearray) and len(request.body) > _STREAM_ABOVE:
        request.body = io.BytesIO(request.body)


def classify(exc: Exception) -> SendError:
    """Map an error from botocore (or the network under it) to transient or permanent."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and "Error" in response:
        error = response.get("Error") or {}
        code = str(error.get("Code") or "")
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        reply = f"{code}: {error.get('Message') or exc}" if code else str(exc)
        kind = PermanentSendError if code in PERMANENT_CODES else TransientSendError
        return kind(reply, provider=NAME, code=status if isinstance(status, int) else None)
    from botocore.exceptions import ParamValidationError  # type: ignore[import-untyped]

    if isinstance(exc, ParamValidationError):
        # The request itself is malformed (an empty address): sending again will not help.
        return PermanentSendError(str(exc), provider=NAME)
    return TransientSendError(f"{type(exc).__name__}: {exc}", provider=NAME)


@dataclass(frozen=True)
class _Aws:
    get_session: Any
    AioConfig: Any


def _import_aws() -> _Aws:
    try:
        from aiobotocore.config import AioConfig  # type: ignore[import-untyped]
        from aiobotocore.session import get_session  # type: ignore[import-untyped]
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    return _Aws(get_session=get_session, AioConfig=AioConfig)
