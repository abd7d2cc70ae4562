"""SMTP through a pool of reused ``aiosmtplib`` connections, with a sending-rate cap."""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass, field
from typing import Literal

import aiosmtplib
from aiosmtplib import SMTPStatus

from tidings.email.message import OutgoingEmail
from tidings.email.providers._ratelimit import RateLimiter
from tidings.email.providers.base import (
    Accepted,
    Capabilities,
    PermanentSendError,
    SendError,
    TransientSendError,
)

NAME = "smtp"

Security = Literal["none", "starttls", "tls"]

_DEFAULT_PORTS: dict[str, int] = {"none": 25, "starttls": 587, "tls": 465}
# Postfix, Exim, Sendmail and most relays name their queue entry in the 250 reply.
_QUEUE_ID = re.compile(r"queued as ([A-Za-z0-9._-]+)", re.IGNORECASE)
_QUIT_TIMEOUT = 5.0
# Control characters never belong in a bare envelope address, nor whitespace, angle
# brackets or quotes outside a quoted local part: they would end the address early.
_UNSAFE_IN_ADDRESS = re.compile(r"[\x00-\x1f\x7f]")
_UNSAFE_UNQUOTED = re.compile(r'[\s<>"]')
_QUOTED_LOCAL_PART = re.compile(r'^"(?:[^"\\\r\n]|\\.)*"')
# 530 authentication required, 534 mechanism too weak, 535 bad credentials,
# 538 encryption required.
_SESSION_REFUSALS = frozenset({530, 534, 535, 538})


@dataclass(frozen=True)
class SmtpSettings:
    """Where and how to reach an SMTP relay.

    ``security``: ``"starttls"`` upgrades a plain connection (port 587), ``"tls"`` is
    implicit TLS from the first byte (port 465), ``"none"`` sends in the clear (port 25).
    ``port`` defaults by ``security``. ``cert_bundle`` is a CA file to trust instead of
    the system's, for relays with a private CA.
    """

    host: str = "localhost"
    port: int | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    security: Security = "starttls"
    timeout: float = 30.0
    pool_size: int = 4
    max_per_second: float | None = None
    validate_certs: bool = True
    cert_bundle: str | None = None
    local_hostname: str | None = None
    max_message_bytes: int = 10 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.security not in _DEFAULT_PORTS:
            raise ValueError(f"security must be one of {sorted(_DEFAULT_PORTS)}")
        if self.pool_size < 1:
            raise ValueError("pool_size must be at least 1")
        if self.max_per_second is not None and not self.max_per_second > 0:
            raise ValueError("max_per_second must be positive, or None for no cap")
        if not self.timeout > 0:
            raise ValueError("timeout must be positive")

    @property
    def resolved_port(self) -> int:
        return self.port if self.port is not None else _DEFAULT_PORTS[self.security]


class SmtpProvider:
    """Sends through up to ``pool_size`` connections, opened on demand and kept open.

    A pooled connection the server has dropped is replaced before use; one found dead
    in the middle of a send is replaced and the send tried once more. A 421 reply means
    the server is closing: that connection is discarded. ``connections_opened`` counts
    every connection made, for metrics.
    """

    def __init__(self, settings: SmtpSettings, *, limiter: RateLimiter | None = None) -> None:
        self.settings = settings
        if limiter is None and settings.max_per_second is not None:
            limiter = RateLimiter(settings.max_per_second)
        self._limiter = limiter
        self._capabilities = Capabilities(
            name=NAME,
            max_message_bytes=settings.max_message_bytes,
            max_per_second=limiter.per_second if limiter is not None else None,
            connections=settings.pool_size,
        )
        self._slots = asyncio.Semaphore(settings.pool_size)
        self._idle: list[aiosmtplib.SMTP] = []
        self._closing = False
        self._closed = False
        self.connections_opened = 0

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    async def send(self, email: OutgoingEmail) -> Accepted:
        """Send one message over a pooled connection.

        Raises:
            TransientSendError: connection trouble, a timeout, a 4xx reply.
            PermanentSendError: a 5xx reply to the message, or an unusable address.
        """
        if self._closing:
            raise TransientSendError("the SMTP provider is closed", provider=NAME)
        if self._limiter is not None:
            await self._limiter.acquire()
        async with self._slots:
            if self._closed:
                raise TransientSendError("the SMTP provider is closed", provider=NAME)
            return await self._send_pooled(email)

    async def close(self) -> None:
        """Refuse new sends, let those already waiting finish, then QUIT every connection."""
        self._closing = True
        # The slots are handed out in turn, so these come after every send queued so far.
        for _ in range(self.settings.pool_size):
            await self._slots.acquire()
        try:
            self._closed = True
            idle, self._idle = self._idle, []
            await asyncio.gather(*(_quit(smtp) for smtp in idle))
        finally:
            for _ in range(self.settings.pool_size):
                self._slots.release()

    async def _send_pooled(self, email: OutgoingEmail) -> Accepted:
        for address in (email.sender, email.recipient):
            if not _usable(address):
                raise PermanentSendError(f"not a usable address: {address!r}", provider=NAME)
        options = ["SMTPUTF8"] if not (email.sender + email.recipient).isascii() else []
        fresh = False
        while True:
            smtp, reused = (await self._open(), False) if fresh else await self._checkout()
            try:
                reply = await _transaction(smtp, email, options)
            except aiosmtplib.SMTPServerDisconnected as exc:
                smtp.close()
                if reused:
                    # The server dropped an idle pooled connection before we noticed:
                    # try once more, on a new connection.
                    fresh = True
                    continue
                raise TransientSendError(f"connection lost: {exc}", provider=NAME) from exc
            except aiosmtplib.SMTPResponseException as exc:
                # The envelope was reset (RSET), or aiosmtplib closed the connection
                # itself on a 421; either way the check-in below decides.
                self._checkin(smtp)
                raise _reply_error(exc.code, exc.message) from exc
            except (aiosmtplib.SMTPNotSupported, ValueError) as exc:
                # Refused before MAIL FROM: an address that is malformed, or that needs
                # SMTPUTF8 the server lacks. The connection itself is fine.
                self._checkin(smtp)
                reason = str(exc)
                if options and not smtp.supports_extension("smtputf8"):
                    needing = email.recipient if not email.recipient.isascii() else email.sender
                    reason = (
                        f"the SMTP server does not offer SMTPUTF8, which {needing!r} needs "
                        "(it has characters outside ASCII before the @)"
                    )
                raise PermanentSendError(reason, provider=NAME) from exc
            except Exception as exc:
                # A timeout or anything unforeseen leaves the session in an unknown
                # state: never hand that connection out again.
                smtp.close()
                raise TransientSendError(f"{type(exc).__name__}: {exc}", provider=NAME) from exc
            except BaseException:
                smtp.close()
                raise
            self._checkin(smtp)
            return Accepted(provider=NAME, provider_id=_queue_id(reply), reply=f"250 {reply}")

    async def _checkout(self) -> tuple[aiosmtplib.SMTP, bool]:
        """A live connection and whether it was reused, opening one when none is idle."""
        while self._idle:
            smtp = self._idle.pop()
            if smtp.is_connected:
                return smtp, True
            smtp.close()
        return await self._open(), False

    def _checkin(self, smtp: aiosmtplib.SMTP) -> None:
        if smtp.is_connected:
            self._idle.append(smtp)
        else:
            smtp.close()

    async def _open(self) -> aiosmtplib.SMTP:
        s = self.settings
        smtp = aiosmtplib.SMTP(
            hostname=s.host,
            port=s.resolved_port,
            username=s.username,
            password=s.password,
            local_hostname=s.local_hostname,
            timeout=s.timeout,
            use_tls=s.security == "tls",
            start_tls=s.security == "starttls",
            validate_certs=s.validate_certs,
            cert_bundle=s.cert_bundle,
        )
        try:
            await smtp.connect()
        except aiosmtplib.SMTPResponseException as exc:
            # A refused greeting, EHLO, STARTTLS or AUTH is the relay's or our
            # configuration's trouble, not this message's: retry, or fail over.
            raise TransientSendError(
                f"{exc.code} {exc.message}", provider=NAME, code=exc.code
            ) from exc
        except Exception as exc:
            raise TransientSendError(
                f"cannot connect to {s.host}:{s.resolved_port}: {exc}", provider=NAME
            ) from exc
        self.connections_opened += 1
        return smtp


async def _transaction(smtp: aiosmtplib.SMTP, email: OutgoingEmail, options: list[str]) -> str:
    """MAIL, RCPT and DATA for one message; the text of the reply to the message.

    What ``SMTP.sendmail`` does for one recipient, less its work already done here: the
    addresses were checked (it parses each twice with the standard library's address
    parser) and the message has CRLF line endings (it normalises them twice). After a
    refusal the envelope is reset (RSET), as it does.

    Raises:
        aiosmtplib.SMTPResponseException: a refusal (the sender, the recipient, the data).
        aiosmtplib.SMTPNotSupported: SMTPUTF8 is needed and not offered.
        aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError: as ``sendmail``.
    """
    encoding = "utf-8" if options else "ascii"
    if smtp.is_ehlo_or_helo_needed:
        try:
            await smtp.ehlo()
        except aiosmtplib.SMTPHeloError:
            if not smtp.is_connected:
                raise
            await smtp.helo()
    if options and not smtp.supports_extension("smtputf8"):
        raise aiosmtplib.SMTPNotSupported("SMTPUTF8 is not supported by this server")
    mail = [b"FROM:<" + email.sender.encode(encoding) + b">"]
    if smtp.supports_extension("size"):
        # RFC 1870: the octets as sent in the DATA command, CRLF pairs included.
        size = len(email.raw) + (0 if email.raw.endswith(b"\r\n") else 2)
        mail.append(b"SIZE=%d" % size)
    mail += [option.encode("ascii") for option in options]
    try:
        reply = await smtp.execute_command(b"MAIL", *mail)
        if reply.code != SMTPStatus.completed:
            raise aiosmtplib.SMTPSenderRefused(reply.code, reply.message, email.sender)
        reply = await smtp.execute_command(
            b"RCPT", b"TO:<" + email.recipient.encode(encoding) + b">"
        )
        if reply.code not in (SMTPStatus.completed, SMTPStatus.will_forward):
            raise aiosmtplib.SMTPRecipientRefused(reply.code, reply.message, email.recipient)
        reply = await smtp.data(email.raw)
    except aiosmtplib.SMTPResponseException:
        with contextlib.suppress(ConnectionError, aiosmtplib.SMTPResponseException):
            await smtp.rset()
        raise
    return reply.message


def _usable(address: str) -> bool:
    """Whether ``address`` can go between the angle brackets of MAIL or RCPT as it is."""
    return bool(address) and not (
        _UNSAFE_IN_ADDRESS.search(address)
        or _UNSAFE_UNQUOTED.search(_QUOTED_LOCAL_PART.sub("", address, count=1))
    )


def _reply_error(code: int, message: str) -> SendError:
    """5xx: the server refused this message for good; anything else: try again.

    Except the 5xx replies about authentication and encryption (RFC 4954): they say
    our connection is set up wrong, which holds for every message until fixed.
    """
    reply = f"{code} {message}"
    if 500 <= code < 600 and code not in _SESSION_REFUSALS:
        return PermanentSendError(reply, provider=NAME, code=code)
    return TransientSendError(reply, provider=NAME, code=code)


def _queue_id(reply: str) -> str | None:
    found = _QUEUE_ID.search(reply)
    return found.group(1) if found else None


async def _quit(smtp: aiosmtplib.SMTP) -> None:
    with contextlib.suppress(aiosmtplib.SMTPException, OSError):
        if smtp.is_connected:
            await smtp.quit(timeout=_QUIT_TIMEOUT)
    smtp.close()
