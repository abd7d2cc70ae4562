"""A real SMTP server for tests: aiosmtpd on loopback, recording what it receives.

    async with SmtpSink() as sink:                      # plain SMTP on 127.0.0.1:<free>
        ...send to sink.host, sink.port...
        [received] = await sink.wait_for(1)
        received.message["Subject"]

    SmtpSink(security="starttls", auth=("user", "secret"))   # STARTTLS required, then AUTH
    SmtpSink(security="tls")                                 # implicit TLS (SMTPS)
    sink.ca_file                                             # the CA to trust, for TLS
    sink.respond_with(["451 4.3.0 try later", "550 5.1.1 no such user"])  # next DATAs
    sink.respond_with(["550 5.1.1 unknown"], at="RCPT")
    sink.respond_with([DROP])                 # hang up at the next DATA, without a reply

Queued replies are used one per command at that stage, then the sink accepts again;
a 421 reply closes the connection after it is sent, as a real server does. The server
runs in the test's event loop by default; ``threaded=True`` gives it a loop and thread
of its own (for benchmarks, so the sink's work does not share the client's loop).
"""

from __future__ import annotations

import asyncio
import atexit
import datetime as dt
import email.message
import email.parser
import email.policy
import ipaddress
import shutil
import ssl
import tempfile
import threading
from collections import deque
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path
from types import TracebackType
from typing import Any, AnyStr, Literal

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

Security = Literal["none", "starttls", "tls"]
Stage = Literal["MAIL", "RCPT", "DATA"]

DROP = "DROP"
"""A programmed reply that closes the connection instead of answering."""


@dataclass(frozen=True)
class ReceivedEnvelope:
    """One accepted message: its envelope, its bytes, and how it arrived."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    raw: bytes
    connection: int
    """Which connection carried it, numbered from 1 in the order they were opened."""
    tls: bool
    username: str | None
    mail_options: tuple[str, ...] = ()
    stalled: float = 0.0
    """How long the server made it wait before answering (``SmtpSink.stall``)."""

    @cached_property
    def message(self) -> email.message.EmailMessage:
        """The message parsed with the standard library's modern policy.

        Line endings are the email package's own ``\\n``; ``raw`` keeps the wire's CRLF.
        """
        source = self.raw.replace(b"\r\n", b"\n")
        parsed = email.parser.BytesParser(policy=email.policy.default).parsebytes(source)
        assert isinstance(parsed, email.message.EmailMessage)
        return parsed


@dataclass
class _State:
    """Everything the server side writes and the test side reads, behind one lock."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    received: list[ReceivedEnvelope] = field(default_factory=list)
    refused: list[tuple[Stage, str]] = field(default_factory=list)
    replies: dict[Stage, deque[str]] = field(
        default_factory=lambda: {"MAIL": deque(), "RCPT": deque(), "DATA": deque()}
    )
    connections: list[_SinkSMTP] = field(default_factory=list)
    stalls: deque[float] = field(default_factory=deque)
    stall_every: float = 0.0


class SmtpSink:
    """An aiosmtpd server on a free loopback port; an async context manager."""

    def __init__(
        self,
        *,
        security: Security = "none",
        auth: tuple[str, str] | None = None,
        threaded: bool = False,
        host: str = "127.0.0.1",
        port: int = 0,
        data_size_limit: int | None = 32 * 1024 * 1024,
        smtputf8: bool = True,
    ) -> None:
        if security not in ("none", "starttls", "tls"):
            raise ValueError(f"unknown security {security!r}")
        self.security = security
        self.auth = auth
        self.host = host
        self.port = port
        self.threaded = threaded
        self.data_size_limit = data_size_limit
        self.smtputf8 = smtputf8
        """Whether the sink offers SMTPUTF8 (RFC 6531) in its EHLO answer."""
        self.ca_file: Path | None = None
        """The CA certificate a client must trust to verify this sink (TLS only)."""
        self._state = _State()
        self._tls_context: ssl.SSLContext | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------

    async def __aenter__(self) -> SmtpSink:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Listen; ``port`` is the bound port afterwards (kept across a restart)."""
        if self._server is not None:
            raise RuntimeError("the sink is already running")
        if self.security != "none" and self._tls_context is None:
            ca_file, cert_file, key_file = certificates()
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert_file, key_file)
            self._tls_context = context
            self.ca_file = ca_file
        if not self.threaded:
            self._loop = asyncio.get_running_loop()
            await self._listen()
            return
        loop = asyncio.new_event_loop()
        self._loop = loop
        started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._thread = threading.Thread(
            target=self._run_thread, args=(loop, started), name="smtp-sink", daemon=True
        )
        self._thread.start()
        await started

    async def stop(self) -> None:
        """Close every connection and the listener; wait until they are gone."""
        if self._server is not None and self._loop is not None:
            if self._thread is None:
                await self._shutdown()
            else:
                done = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
                await asyncio.wrap_future(done)
                self._loop.call_soon_threadsafe(self._loop.stop)
                await asyncio.to_thread(self._thread.join)
                self._thread = None
        self._server = None
        self._loop = None

    # -- what tests use -------------------------------------------------------------

    @property
    def received(self) -> list[ReceivedEnvelope]:
        """The messages accepted so far, in order."""
        with self._state.lock:
            return list(self._state.received)

    @property
    def refused(self) -> list[tuple[Stage, str]]:
        """The programmed refusals sent so far: (stage, reply)."""
        with self._state.lock:
            return list(self._state.refused)

    @property
    def connections_opened(self) -> int:
        with self._state.lock:
            return len(self._state.connections)

    @property
    def connections_active(self) -> int:
        with self._state.lock:
            return sum(1 for smtp in self._state.connections if smtp.transport is not None)

    def respond_with(self, replies: list[str], *, at: Stage = "DATA") -> None:
        """Answer the next commands at ``at`` with these replies, one each, in order."""
        for reply in replies:
            if reply != DROP and not (len(reply) >= 3 and reply[:3].isdigit()):
                raise ValueError(f"not an SMTP reply: {reply!r}")
        with self._state.lock:
            self._state.replies[at].extend(replies)

    def stall(self, seconds: float, *, count: int | None = None) -> None:
        """Make the next ``count`` messages (every message when None) wait ``seconds``
        after their data before the server answers: a slow provider."""
        with self._state.lock:
            if count is None:
                self._state.stall_every = seconds
            else:
                self._state.stalls.extend([seconds] * count)

    def _stall_for(self) -> float:
        with self._state.lock:
            return self._state.stalls.popleft() if self._state.stalls else self._state.stall_every

    async def wait_for(self, count: int, timeout: float = 5.0) -> list[ReceivedEnvelope]:
        """Wait until at least ``count`` messages arrived; returns all received."""
        deadline = asyncio.get_running_loop().time() + timeout
        while len(received := self.received) < count:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"{len(received)} of {count} messages within {timeout}s")
            await asyncio.sleep(0.005)
        return received

    async def drop_connections(self) -> None:
        """Close every open connection from the server side without a word (no 421)."""

        def drop() -> None:
            with self._state.lock:
                connections = list(self._state.connections)
            for smtp in connections:
                if smtp.transport is not None:
                    smtp.transport.close()

        if self._loop is None:
            return
        if self._thread is None:
            drop()
        else:
            self._loop.call_soon_threadsafe(drop)

    # -- the server side ------------------------------------------------------------

    def _run_thread(self, loop: asyncio.AbstractEventLoop, started: asyncio.Future[None]) -> None:
        caller = started.get_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._listen())
        except BaseException as exc:
            caller.call_soon_threadsafe(started.set_exception, exc)
            loop.close()
            return
        caller.call_soon_threadsafe(started.set_result, None)
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: self._new_connection(loop),
            host=self.host,
            port=self.port,
            ssl=self._tls_context if self.security == "tls" else None,
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        assert self._server is not None
        self._server.close()
        with self._state.lock:
            connections = list(self._state.connections)
        for smtp in connections:
            if smtp.transport is not None:
                smtp.transport.close()
        tasks = [smtp._handler_coroutine for smtp in connections if smtp._handler_coroutine]
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._server.wait_closed()

    def _new_connection(self, loop: asyncio.AbstractEventLoop) -> _SinkSMTP:
        with self._state.lock:
            number = len(self._state.connections) + 1
        smtp = _SinkSMTP(
            _Handler(self),
            number=number,
            loop=loop,
            hostname="sink.test",
            enable_SMTPUTF8=self.smtputf8,
            data_size_limit=self.data_size_limit,
            tls_context=self._tls_context if self.security == "starttls" else None,
            require_starttls=self.security == "starttls",
            authenticator=self._authenticate if self.auth else None,
            # aiosmtpd only knows about TLS it negotiated itself (STARTTLS); with
            # implicit TLS the whole connection is already encrypted.
            auth_require_tls=self.security == "starttls",
        )
        with self._state.lock:
            self._state.connections.append(smtp)
        return smtp

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert self.auth is not None
        expected = (self.auth[0].encode(), self.auth[1].encode())
        if isinstance(data, LoginPassword) and (data.login, data.password) == expected:
            return AuthResult(success=True, auth_data=data)
        return AuthResult(success=False, handled=False)

    def _next_reply(self, stage: Stage) -> str | None:
        with self._state.lock:
            queue = self._state.replies[stage]
            reply = queue.popleft() if queue else None
            if reply is not None and not reply.startswith("2"):
                self._state.refused.append((stage, reply))
            return reply

    def _record(
        self, smtp: _SinkSMTP, session: Session, envelope: Envelope, *, stalled: float = 0.0
    ) -> None:
        raw = envelope.original_content
        if raw is None:
            raw = envelope.content if isinstance(envelope.content, bytes) else b""
        transport = smtp.transport
        record = ReceivedEnvelope(
            mail_from=envelope.mail_from or "",
            rcpt_tos=tuple(envelope.rcpt_tos),
            raw=raw,
            connection=smtp.number,
            tls=transport is not None and transport.get_extra_info("ssl_object") is not None,
            username=(
                session.auth_data.login.decode()
                if isinstance(session.auth_data, LoginPassword)
                else None
            ),
            mail_options=tuple(envelope.mail_options),
            stalled=stalled,
        )
        with self._state.lock:
            self._state.received.append(record)


class _SinkSMTP(SMTP):
    """aiosmtpd's server, numbered, and closing the connection after any 421."""

    def __init__(self, handler: Any, *, number: int, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.number = number

    async def push(self, status: AnyStr) -> None:
        if status == DROP:
            if self.transport is not None:
                self.transport.close()
            return
        await super().push(status)
        text = status if isinstance(status, str) else status.decode("utf-8", "replace")
        if text.startswith("421") and self.transport is not None:
            self.transport.close()


class _Handler:
    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if self.sink.auth and not session.authenticated:
            return "530 5.7.0 Authentication required"
        reply = self.sink._next_reply("MAIL")
        if reply is not None and not reply.startswith("2"):
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return reply or "250 OK"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        reply = self.sink._next_reply("RCPT")
        if reply is not None and not reply.startswith("2"):
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return reply or "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if stall := self.sink._stall_for():
            await asyncio.sleep(stall)
        reply = self.sink._next_reply("DATA")
        if reply is not None and not reply.startswith("2"):
            return reply
        assert isinstance(server, _SinkSMTP)
        self.sink._record(server, session, envelope, stalled=stall)
        return reply or f"250 2.0.0 Ok: queued as S{len(self.sink.received)}"


@cache
def certificates() -> tuple[Path, Path, Path]:
    """This process's test certificates, made on first use and removed at exit."""
    directory = Path(tempfile.mkdtemp(prefix="smtp-sink-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    return write_certificates(directory)


def write_certificates(
    directory: Path, names: tuple[str, ...] = ("localhost",)
) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate it signed for the DNS ``names`` (and, for
    the default ``localhost``, 127.0.0.1 and ::1).

    Returns the paths of the CA certificate, the server certificate and its key.
    """
    alternatives: list[x509.GeneralName] = [x509.DNSName(name) for name in names]
    if names == ("localhost",):
        alternatives += [
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1")),
        ]
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "smtp-sink test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(alternatives),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = directory / "ca.pem"
    cert_file = directory / "server.pem"
    key_file = directory / "server.key"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_file, cert_file, key_file
